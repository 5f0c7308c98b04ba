"""Rendering the platform's pages: one Jinja2 environment, one base layout, strict headers.

Templates only render (``templates/``); views gather what they show and call
:func:`page`. Every page gets ``actor``, ``csrf_token``, the navigation the
actor may use, ``may(action)`` and the filters ``when``, ``ago``, ``plural``,
``size``. Autoescaping is on for every template.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
import jinja2
from aiohttp import web

from cloud_bridge import fleet
from cloud_bridge.access import ACCESS_KEY, ACTOR_KEY, csrf_token, set_csrf_cookie
from cloud_bridge.permissions import ANONYMOUS, Action, Actor, may

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}

# The navigation: (label, path). A link is shown to whoever may open its page:
# the action is the one its GET route declares (one place, the route table).
NAV: list[tuple[str, str]] = [
    ("Activities", "/activities"),
    ("Activity types", "/types"),
    ("Rejections", "/rejections"),
    ("Exports", "/exports"),
    ("Users", "/users"),
    ("Fleet", "/fleet"),
    ("Audit log", "/audit"),
]


def nav_for(app: web.Application, actor: Actor) -> list[tuple[str, str]]:
    """The links of :data:`NAV` that ``actor`` may open (by their GET route's action)."""
    routes = app[ACCESS_KEY].declared()
    return [
        (label, path)
        for label, path in NAV
        if (route := routes.get(("GET", path))) is not None and may(actor, route.action)
    ]


def when(value: datetime | str | None) -> str:
    parsed = value if isinstance(value, datetime) else fleet.parse_time(value)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if parsed else "never"


def when_s(value: datetime | str | None) -> str:
    parsed = value if isinstance(value, datetime) else fleet.parse_time(value)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if parsed else "never"


def ago(value: datetime | float | None) -> str:
    if value is None:
        return "never"
    seconds = (datetime.now(UTC) - value).total_seconds() if isinstance(value, datetime) else value
    return f"{fleet.duration(max(0.0, seconds))} ago"


def plural(n: int, one: str, many: str | None = None) -> str:
    """``plural(1, "gateway")`` -> "1 gateway"; ``plural(2, "gateway")`` -> "2 gateways".

    Thousands are grouped (``10,000 gateways``): a fleet count is read at a glance.
    """
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def setup(app: web.Application) -> None:
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=when, when_s=when_s, ago=ago, size=lambda v: fleet.size(float(v)), urlq=quote
    )
    env.globals.update(plural=plural, Action=Action)


def _context(request: web.Request, extra: dict[str, Any]) -> dict[str, Any]:
    actor: Actor = request.get(ACTOR_KEY) or ANONYMOUS
    nav = nav_for(request.app, actor)
    return {
        "actor": actor,
        "csrf_token": csrf_token(request),
        "nav": nav,
        "here": request.path,
        "may": lambda action: may(actor, action),
        "flash": FLASH.get(request.query.get("done", "")),
        "refresh_s": None,
        "title": "Outpost",
        **extra,
    }


def page(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    response = aiohttp_jinja2.render_template(
        template, request, _context(request, context), status=status
    )
    response.headers.update(HEADERS)
    set_csrf_cookie(request, response)
    return response


def see_other(location: str, done: str | None = None) -> web.HTTPSeeOther:
    """Post/redirect/get: answer a form with a redirect (and a flash message key)."""
    if done:
        location += ("&" if "?" in location else "?") + f"done={quote(done)}"
    return web.HTTPSeeOther(location, headers=HEADERS)


# Messages shown once after a form (``?done=<key>``): keys, never free text from the URL.
FLASH: dict[str, str] = {
    "signed_out": "You are signed out.",
    "created": "Created.",
    "saved": "Saved.",
    "imported": "The XLSForm is imported; the form below is what it says.",
    "approved": "Approved: the activity may now go offline.",
    "dispatched": "Dispatched: the gateway will receive it when it is connected.",
    "recalled": "Recalled: the gateway is told to stop offering it.",
    "token_created": "Token created.",
    "token_revoked": "Token revoked.",
    "password_changed": "Your password is changed; your other sessions are ended.",
    "reviewed": "Review recorded.",
    "sent_back": "Sent back: the gateway will offer it to the crew again, with your note.",
}


def safe_next(value: str | None) -> str:
    """Where to go after sign-in: only a path on this site."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if any(ord(c) < 32 for c in value):
        return "/"
    return value[:500]


def sign_in_redirect(request: web.Request) -> web.StreamResponse:
    if request.method == "GET":
        raise see_other("/signin?next=" + quote(request.path_qs, safe=""))
    return page(
        request,
        "refused.html",
        401,
        title="Sign in",
        reason="Your session has ended; sign in again.",
        sign_in=True,
    )


def refused(request: web.Request, reason: str, status: int = 403) -> web.Response:
    return page(request, "refused.html", status, title="Not allowed", reason=reason, sign_in=False)


def error_page(request: web.Request, status: int, message: str) -> web.Response:
    titles = {400: "That did not work", 404: "Not found", 405: "Not allowed", 409: "Not now"}
    return page(
        request,
        "error.html",
        status,
        title=titles.get(status, "Something went wrong"),
        message=message,
        status_code=status,
    )
