"""The admin port's application, wired in one place: middlewares, every route table, the keys.

The keys themselves live in ``cloud_bridge/app_keys.py`` (a leaf), so the
modules that hold handlers never import this one.

Middleware order (outermost first): ``error_middleware`` (``outpost.http.errors``,
with the admin API's codes) turns every failure into
``{"error": {"code", "message"}}`` for the API, or an error page for the
pages; ``input_middleware`` refuses control characters in the path and query;
``access_middleware`` (``cloud_bridge.access``) works out who is asking
and checks the route's declared action (``cloud_bridge.permissions``) before
any handler runs. Request bodies are capped at ``admin.max_body_bytes``.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from cloud_bridge import export_views, review_views, type_versions, views
from cloud_bridge.access import (
    ACCESS_KEY,
    Access,
    PageRefused,
    Route,
    access_middleware,
    is_api_path,
    register,
)
from cloud_bridge.app_keys import (
    API_ROUTES_KEY,
    BLOBS_KEY,
    FLEET_KEY,
    MAX_BODY_KEY,
    METRICS_KEY,
    MQTT_KEY,
    RUNNER_KEY,
    TOKEN_KEY,
)
from cloud_bridge.blobs import BlobStore
from cloud_bridge.config import FleetSection, PlatformSection
from cloud_bridge.dbrunner import DbRunner
from cloud_bridge.errors import CentralError
from cloud_bridge.forwarded import forwarded_middleware, networks
from cloud_bridge.identity import Policy
from cloud_bridge.metrics import BridgeMetrics, metrics_handler
from cloud_bridge.mqtt_bridge import MqttBridge
from cloud_bridge.passwords import PasswordWork
from cloud_bridge.permissions import Action
from cloud_bridge.web import pages, render
from outpost.files import write_atomically
from outpost.http import errors as http_errors
from outpost.http.errors import ApiError, error_response
from outpost.logs import escape_control

logger = logging.getLogger(__name__)

TOKEN_FILE = "admin-token"

# The admin API's codes for aiohttp's own HTTP exceptions, over the shared ones.
_HTTP_CODES: dict[int, tuple[str, str]] = {
    401: ("unauthorized", "Sign in, or send a token as 'Authorization: Bearer <token>'."),
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def load_or_create_token(data_dir: Path) -> tuple[str, Path]:
    """The admin token kept 0600 in ``data_dir/admin-token``, generated on first start."""
    path = data_dir / TOKEN_FILE
    try:
        token = path.read_text().strip()
        if len(token) >= 16:
            return token, path
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    write_atomically(path, token + "\n", 0o600)
    return token, path


def _page_refused(request: web.Request, exc: Exception) -> web.StreamResponse | None:
    """A page the person may not open: sign in first, or a page saying why not."""
    if not isinstance(exc, PageRefused):
        return None
    if exc.message is None:
        return render.sign_in_redirect(request)
    return render.refused(request, exc.message)


def _respond(request: web.Request, error: ApiError) -> web.StreamResponse:
    """A JSON error for the API, an error page for a person's browser."""
    if is_api_path(request.path):
        return error_response(error.status, error.code, error.message, error.headers, **error.extra)
    response = render.error_page(request, error.status, error.message)
    response.headers.update(error.headers)
    return response


error_middleware = http_errors.error_middleware(
    http_errors.ErrorAnswers(
        service="the admin API",
        body_limit=lambda request: request.app[MAX_BODY_KEY],
        internal=("internal", "Central could not complete the request; see its log."),
        codes=_HTTP_CODES,
        translate=_page_refused,
        respond=_respond,
    )
)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@web.middleware
async def input_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse an address with a control character (NUL, newline…) in its path or query.

    No identifier, search or parameter of this port holds one, and PostgreSQL
    cannot compare text with a NUL in it: refused here once, for every route.
    """
    if _CONTROL.search(request.path):
        raise CentralError(
            "invalid_path",
            "The address holds a control character (such as NUL or a newline); "
            "no identifier holds one.",
            400,
        )
    for key, value in request.query.items():
        if _CONTROL.search(key) or _CONTROL.search(value):
            raise CentralError(
                "invalid_query",
                f"The query parameter {escape_control(key)[:64]!r} holds a control character "
                "(such as NUL or a newline).",
                400,
            )
    return await handler(request)


def make_app(
    runner: DbRunner,
    mqtt: MqttBridge,
    token: str,
    max_body_bytes: int,
    *,
    fleet: FleetSection | None = None,
    metrics: BridgeMetrics | None = None,
    blobs: BlobStore,
    platform: PlatformSection | None = None,
    passwords: PasswordWork | None = None,
    trusted_proxies: tuple[str, ...] = (),
) -> web.Application:
    platform = platform or PlatformSection()
    app = web.Application(
        # The proxy's word first, so that every later step sees the real client.
        middlewares=[
            forwarded_middleware(networks(trusted_proxies)),
            error_middleware,
            input_middleware,
            access_middleware,
        ],
        client_max_size=max_body_bytes,
    )
    app[ACCESS_KEY] = Access(
        runner,
        token,
        policy_of(platform),
        passwords or PasswordWork(platform.password_slots, platform.password_wait_s),
        metrics_public=not (fleet or FleetSection()).metrics_auth,
    )
    app[RUNNER_KEY] = runner
    app[MQTT_KEY] = mqtt
    app[TOKEN_KEY] = token
    app[MAX_BODY_KEY] = max_body_bytes
    app[FLEET_KEY] = fleet or FleetSection()
    app[METRICS_KEY] = metrics or BridgeMetrics()
    app[BLOBS_KEY] = blobs
    routes = api_routes()
    app[API_ROUTES_KEY] = tuple(routes)
    render.setup(app)
    register(app, routes)
    export_views.setup(app, runner.db, blobs)
    pages.add_routes(app)
    register(
        app,
        [Route("GET", "/metrics", metrics_handler, "Prometheus metrics", Action.METRICS_READ)],
    )
    return app


def api_routes() -> list[Route]:
    """The API's route table: ``views`` and the modules that use its helpers."""
    return views.ROUTES + review_views.ROUTES + export_views.ROUTES + type_versions.ROUTES


def policy_of(platform: PlatformSection) -> Policy:
    return Policy(
        session_idle_s=platform.session_idle_s,
        session_max_s=platform.session_max_s,
        api_session_s=platform.api_session_s,
        max_failures=platform.signin_max_failures,
        failure_window_s=platform.signin_window_s,
        lockout_s=platform.signin_lockout_s,
    )
