"""The one door: who is asking, and may they use this route.

Every route of the admin port — API (``cloud_bridge.views.ROUTES``) and pages
(``cloud_bridge.web.pages.PAGES``) — is a :class:`Route` with one
:class:`~cloud_bridge.permissions.Action`. :func:`access_middleware` runs
before every handler:

1. finds the route's declaration (a path the router does not know falls
   through to its 404/405; a known route with no declaration is refused);
2. works out the actor: API routes read ``Authorization: Bearer`` (the admin
   token, a person's API token, or a ``POST /api/v1/session`` token); page
   routes read the session cookie only (so no page can be driven cross-site
   with a bearer header, and no API call with a cookie);
3. asks :func:`cloud_bridge.permissions.may`; a refusal is a 401/403 JSON
   error for the API and a page that says why (or the sign-in page) for pages;
4. for a page's POST, checks the CSRF token (the session's; before sign-in
   a cookie's) and that ``Origin``, when sent, is this host.

The handler finds the actor at ``request[ACTOR_KEY]``.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import BaseModel
from sqlalchemy.orm import Session

from cloud_bridge import audit, identity
from cloud_bridge.dbrunner import DbRunner
from cloud_bridge.errors import CentralError
from cloud_bridge.models import User
from cloud_bridge.passwords import PasswordWork
from cloud_bridge.permissions import ANONYMOUS, Action, Actor, may, refusal

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SESSION_COOKIE = "outpost_session"
CSRF_COOKIE = "outpost_csrf"  # before sign-in: the sign-in form's CSRF token
CSRF_FIELD = "csrf_token"

ACTOR_KEY = web.RequestKey("actor", Actor)
ROUTE_KEY = web.RequestKey("route", object)
CSRF_NEW_KEY = web.RequestKey("csrf_new", str)


@dataclass(frozen=True)
class Route:
    """One route and who may use it. ``page``: an HTML page (cookie session, CSRF)."""

    method: str
    path: str
    handler: Handler
    summary: str
    action: Action
    body: type[BaseModel] | None = None
    page: bool = False
    # For the OpenAPI document (cloud_bridge.openapi), which has no table of its own:
    # answers beyond every operation's own (200; 400, 404, 409; 401, 403 unless
    # public; 413 with a body), status -> why; the 200 answer when it has a
    # documented shape (an OpenAPI response object); query parameters; and
    # whether the body may be left out.
    statuses: Mapping[str, str] = field(default_factory=dict, compare=False)
    answer: Mapping[str, Any] | None = field(default=None, compare=False)
    params: tuple[Mapping[str, Any], ...] = field(default=(), compare=False)
    body_optional: bool = False

    @property
    def public(self) -> bool:
        return self.action is Action.PUBLIC


@dataclass
class Access:
    """What the middleware needs: the admin token, the DB, the policy, the password slots."""

    runner: DbRunner
    admin_token: str
    policy: identity.Policy
    passwords: PasswordWork
    metrics_public: bool = False
    routes: dict[tuple[str, str], Route] | None = None

    def declared(self) -> dict[tuple[str, str], Route]:
        if self.routes is None:
            self.routes = {}
        return self.routes


ACCESS_KEY = web.AppKey("access", Access)


def register(app: web.Application, routes: list[Route]) -> None:
    """Add ``routes`` to the router and to the table the middleware checks."""
    table = app[ACCESS_KEY].declared()
    for r in routes:
        key = (r.method, r.path)
        if key in table:
            raise ValueError(f"route {r.method} {r.path} declared twice")
        table[key] = r
        app.router.add_route(r.method, r.path, r.handler)


def declared_route(request: web.Request) -> Route | None:
    info = request.match_info
    if info.http_exception is not None:
        return None
    resource = info.route.resource
    if resource is None:
        return None
    method = "GET" if request.method == "HEAD" else request.method
    return request.app[ACCESS_KEY].declared().get((method, resource.canonical))


def is_api_path(path: str) -> bool:
    return path.startswith("/api/") or path in ("/healthz", "/metrics")


def client_of(request: web.Request) -> str:
    return (request.remote or "unknown")[:200]


def printable_ascii(value: str | None, limit: int) -> str | None:
    """``value`` when it is 1..``limit`` printable ASCII characters (what every token is).

    Header bytes that are not UTF-8 (latin-1, say) reach us as surrogates, which
    no hash or comparison can encode: such a value is no token, not an error.
    """
    if not value or len(value) > limit or not value.isascii() or not value.isprintable():
        return None
    return value


def bearer_of(request: web.Request) -> str | None:
    """The bearer token sent, or None; ``""`` when one was sent but cannot be a token."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return None
    return printable_ascii(given.strip(), 500) or ""


async def async_actor(request: web.Request, route: Route) -> Actor:
    access = request.app[ACCESS_KEY]
    client = client_of(request)
    if route.page:
        cookie = printable_ascii(request.cookies.get(SESSION_COOKIE), 200)
        if cookie is None:
            return ANONYMOUS
        found = await access.runner.async_tx(
            lambda s: identity.session_actor(s, cookie, "web", client, access.policy)
        )
        return found or ANONYMOUS
    token = bearer_of(request)
    if not token:
        return ANONYMOUS
    if hmac.compare_digest(token.encode(), access.admin_token.encode()):
        return Actor("admin_token", via="api", client=client)
    found = await access.runner.async_tx(
        lambda s: identity.bearer_actor(s, token, access.admin_token, client, access.policy)
    )
    return found or ANONYMOUS


def _unauthorized_api(actor: Actor, route: Route, had_token: bool) -> CentralError:
    if not actor.signed_in:
        if had_token:
            return CentralError(
                "unauthorized",
                "That token is not valid (unknown, expired or revoked); sign in again or "
                "send the admin token.",
                401,
            )
        return CentralError(
            "unauthorized",
            "Send a token as 'Authorization: Bearer <token>': the admin token, your API "
            "token, or one from POST /api/v1/session.",
            401,
        )
    return CentralError("forbidden", refusal(actor, route.action), 403)


class PageRefused(Exception):
    """A page the person may not open; ``cloud_bridge.app``'s error middleware renders it.

    ``message`` None: not signed in (sign in first); otherwise why not.
    """

    def __init__(self, message: str | None) -> None:
        super().__init__(message)
        self.message = message


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = declared_route(request)
    if route is None:
        if request.match_info.http_exception is None and request.match_info.route.resource:
            # A route added without a declaration: refuse rather than serve it unguarded.
            logger.error("route %s %s has no declared action", request.method, request.path)
            raise CentralError("forbidden", "This address is not open to anyone.", 403)
        return await handler(request)
    request[ROUTE_KEY] = route
    access = request.app[ACCESS_KEY]
    action = route.action
    if action is Action.METRICS_READ and access.metrics_public:
        action = Action.PUBLIC
    actor = (
        ANONYMOUS
        if action is Action.PUBLIC and not route.page
        else await async_actor(request, route)
    )
    if route.page:
        actor = dataclasses.replace(actor, via="page", client=client_of(request))
    request[ACTOR_KEY] = actor
    if not may(actor, action):
        if route.page:
            raise PageRefused(None if not actor.signed_in else refusal(actor, action))
        raise _unauthorized_api(actor, route, bearer_of(request) is not None)
    if route.page and request.method == "POST":
        await _check_csrf(request, actor)
    return await handler(request)


def csrf_token(request: web.Request) -> str:
    """The CSRF token a page's forms carry (the session's, or the pre-sign-in cookie's)."""
    actor: Actor | None = request.get(ACTOR_KEY)
    if actor is not None and actor.csrf:
        return str(actor.csrf)
    existing = printable_ascii(request.cookies.get(CSRF_COOKIE), 100)
    if existing and len(existing) >= 16:
        return existing
    made: str | None = request.get(CSRF_NEW_KEY)
    if made is None:
        made = secrets.token_urlsafe(24)
        request[CSRF_NEW_KEY] = made
    return made


def set_csrf_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """Send the pre-sign-in CSRF cookie if this request made one."""
    new = request.get(CSRF_NEW_KEY)
    if new is not None:
        response.set_cookie(
            CSRF_COOKIE,
            new,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )


async def _check_csrf(request: web.Request, actor: Actor) -> None:
    origin = request.headers.get("Origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.host:
        raise CentralError("csrf", "This form was sent from another site; it was refused.", 403)
    form = await request.post()
    given = printable_ascii(str(form.get(CSRF_FIELD, "")), 100) or ""
    expected = actor.csrf or printable_ascii(request.cookies.get(CSRF_COOKIE), 100)
    if not expected or not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise CentralError(
            "csrf",
            "This form is out of date (or was not sent from this site); reload the page and "
            "try again.",
            403,
        )


# --- signing in ------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedIn:
    token: str
    actor: Actor
    expires_at: str
    user: dict[str, object]


async def async_check_password(request: web.Request, username: str, password: str) -> User | None:
    """Count the guess, then check it (bounded argon2); the user when it is right.

    Raises ``signin_locked`` (429) when the user or this address is locked out.
    """
    access = request.app[ACCESS_KEY]
    client = client_of(request)

    def reserve(s: Session) -> User | None:
        identity.reserve_guess(s, username, client, access.policy)
        return s.get(User, username)

    user = await access.runner.async_tx(reserve)
    try:
        ok = await access.passwords.async_verify(user.password_hash if user else None, password)
    except CentralError:  # busy: never checked, so the guess is given back
        await access.runner.async_tx(lambda s: identity.refund_guess(s, username, access.policy))
        raise
    if not ok or user is None:
        logger.info("failed sign-in for user %r from %s", username[:64], client)
        await access.runner.async_tx(lambda s: identity.note_failure(s, client, access.policy))
        return None
    await access.runner.async_tx(lambda s: identity.clear_guesses(s, username))
    return user


async def async_sign_in(
    request: web.Request, username: str, password: str, kind: Literal["web", "api"]
) -> SignedIn:
    """Sign a person in; raises bad_credentials, signin_locked, user_disabled."""
    access = request.app[ACCESS_KEY]
    client = client_of(request)
    user = await async_check_password(request, username, password)
    if user is None:
        raise identity.bad_credentials()
    if user.disabled:
        raise CentralError("user_disabled", "This account is disabled; ask a central admin.", 403)

    def open_it(s: Session) -> SignedIn:
        fresh = s.get(User, username)
        assert fresh is not None
        token, row = identity.open_session(s, fresh, kind, client, access.policy)
        actor = identity.session_actor(s, token, kind, client, access.policy)
        assert actor is not None
        actor = dataclasses.replace(actor, via="page" if kind == "web" else "api")
        audit.record(
            s, actor, "session.sign_in", "user", username, f"{username!r} signed in", kind=kind
        )
        return SignedIn(
            token,
            actor,
            row.expires_at.isoformat().replace("+00:00", "Z"),
            {
                "username": fresh.username,
                "display_name": fresh.display_name,
                "role": fresh.role,
            },
        )

    done: SignedIn = await access.runner.async_tx(open_it)
    logger.info("user %r signed in to central from %s (%s)", username, client, kind)
    return done
