"""The central admin API's application: keys, token, middlewares, routes.

Middleware order (outermost first): ``error_middleware`` turns every
failure into ``{"error": {"code", "message"}}``; ``auth_middleware`` asks for
``Authorization: Bearer <admin token>`` everywhere except ``/healthz``, the
OpenAPI document, the fleet pages under ``/fleet`` (which check their own
login cookie, see ``fleet_page``) and ``/metrics`` when ``fleet.metrics_auth``
is off. Request bodies are capped at ``admin.max_body_bytes``.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from cloud_bridge.blobs import BlobStore
from cloud_bridge.bridge import MqttBridge
from cloud_bridge.config import FleetSection
from cloud_bridge.dbrunner import DbRunner
from cloud_bridge.errors import CentralError
from cloud_bridge.metrics import BridgeMetrics

logger = logging.getLogger(__name__)

RUNNER_KEY = web.AppKey("runner", DbRunner)
MQTT_KEY = web.AppKey("mqtt", MqttBridge)
TOKEN_KEY = web.AppKey("token", str)
FLEET_KEY = web.AppKey("fleet", FleetSection)
METRICS_KEY = web.AppKey("metrics", BridgeMetrics)
BLOBS_KEY = web.AppKey("blobs", BlobStore)

PUBLIC_PATHS = frozenset({"/healthz", "/api/v1/openapi.json"})
TOKEN_FILE = "admin-token"

_HTTP_CODES: dict[int, tuple[str, str]] = {
    400: ("bad_request", "The request is malformed."),
    401: ("unauthorized", "Send the admin token as 'Authorization: Bearer <token>'."),
    404: ("not_found", "There is nothing at this address."),
    405: ("method_not_allowed", "This address does not accept that method."),
    413: ("body_too_large", "The request body is larger than the admin API accepts."),
    415: ("unsupported_media_type", "Send the body as JSON."),
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
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return token, path


def error_json(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except CentralError as exc:
        return error_json(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, message = _HTTP_CODES.get(exc.status, ("http_error", exc.reason))
        if exc.status == 413:
            limit = request.app[MAX_BODY_KEY]
            message = f"The request body is larger than the admin API accepts ({limit} bytes)."
        return error_json(exc.status, code, message)
    except Exception:
        # Loop boundary: log with the path, answer without internals.
        logger.exception("admin API failed on %s %s", request.method, request.path)
        return error_json(500, "internal", "Central could not complete the request; see its log.")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _checks_its_own_auth(request):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    expected = request.app[TOKEN_KEY]
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), expected.encode()
    ):
        return error_json(
            401, "unauthorized", "Send the admin token as 'Authorization: Bearer <token>'."
        )
    return await handler(request)


def _checks_its_own_auth(request: web.Request) -> bool:
    path = request.path
    if path in PUBLIC_PATHS or path == "/fleet" or path.startswith("/fleet/"):
        return True  # public, or the fleet pages' login cookie (fleet_page.require_login)
    return path == "/metrics" and not request.app[FLEET_KEY].metrics_auth


MAX_BODY_KEY = web.AppKey("max_body", int)


def make_app(
    runner: DbRunner,
    mqtt: MqttBridge,
    token: str,
    max_body_bytes: int,
    *,
    fleet: FleetSection | None = None,
    metrics: BridgeMetrics | None = None,
    blobs: BlobStore,
) -> web.Application:
    from cloud_bridge import fleet_page, views
    from cloud_bridge.metrics import metrics_handler

    app = web.Application(
        middlewares=[error_middleware, auth_middleware], client_max_size=max_body_bytes
    )
    app[RUNNER_KEY] = runner
    app[MQTT_KEY] = mqtt
    app[TOKEN_KEY] = token
    app[MAX_BODY_KEY] = max_body_bytes
    app[FLEET_KEY] = fleet or FleetSection()
    app[METRICS_KEY] = metrics or BridgeMetrics()
    app[BLOBS_KEY] = blobs
    views.add_routes(app)
    fleet_page.add_routes(app)
    app.router.add_get("/metrics", metrics_handler)
    return app
