"""The LAN API's middlewares, in the one order they run (outermost first):

1. ``error_middleware``  — every failure becomes ``{"error": {"code", "message"}}``
   (4xx for the caller's mistakes; never a traceback): ``outpost.http.errors``,
   with the gateway's codes and its own exceptions (restarting, disk full).
2. ``metrics_middleware`` — request counts and latency by route.
3. ``auth_middleware``   — bearer token for every route its ``@described``
   does not mark ``public`` (sign-in, ``/healthz``), and for ``/metrics``
   only when ``lan.metrics_auth`` (or only its own
   ``lan.metrics_token`` when that is set); the web app's static
   files and ``/healthz`` stay public. A path or method no route has is
   answered (404, 405 with ``Allow``) before the token is looked at.

Input is read through ``gateway.api.inputs``, which refuses malformed values
with a 4xx; as a last line, an encoding or range error that still escapes
from deep code is the caller's bad input too (``outpost.http.errors``).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from sqlalchemy.exc import OperationalError

from gateway.api.errors import HTTP_CODES, ApiError
from gateway.api.inputs import bearer_token
from gateway.api.keys import AUTH_KEY, CONFIG_KEY, METRICS_KEY, PRINCIPAL
from gateway.api.openapi import DESCRIBED
from gateway.store import StoreClosedError
from outpost.http import errors as http_errors

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _refusal(request: web.Request, exc: Exception) -> ApiError | None:
    """The gateway's own exceptions that are an answer, not a fault."""
    if isinstance(exc, StoreClosedError):
        return ApiError(503, "shutting_down", "The gateway is restarting; try again shortly.")
    if isinstance(exc, TimeoutError):
        return ApiError(504, "timeout", "Central did not answer in time; try again.")
    if isinstance(exc, OperationalError) and "full" in str(exc.orig).lower():
        return ApiError(507, "disk_full", "The gateway's disk is full; nothing new can be saved.")
    return None  # any other database error is a 500, logged


error_middleware = http_errors.error_middleware(
    http_errors.ErrorAnswers(
        service="the gateway",
        body_limit=lambda request: request.app[CONFIG_KEY].lan.max_body_bytes,
        internal=("internal_error", "Something went wrong inside the gateway; it has been logged."),
        codes=HTTP_CODES,
        translate=_refusal,
    )
)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except ApiError as exc:
        status = exc.status
        raise
    finally:
        info = request.match_info.route.resource
        route = info.canonical if info is not None else "unmatched"
        request.app[METRICS_KEY].observe(request.method, route, status, time.perf_counter() - start)


def _needs_token(request: web.Request) -> bool:
    """What the route's ``@described`` says (``public``); ``/metrics`` as configured.

    A route described nowhere (the web app's static files) is public, unless
    it is under ``/api/``: there, forgetting a description cannot open a door.
    """
    path = request.path
    if path == "/metrics":
        return request.app[CONFIG_KEY].lan.metrics_auth
    doc = DESCRIBED.get(request.match_info.handler)
    if doc is None:
        return path.startswith("/api/")
    return not doc.public


def _check_metrics_token(request: web.Request, expected: str) -> None:
    token = bearer_token(request)
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise ApiError(
            401,
            "invalid_token",
            "This is not the metrics token (lan.metrics_token).",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    unrouted = request.match_info.http_exception
    if unrouted is not None:
        raise unrouted  # 404 / 405 (with Allow): nothing to protect at no address
    metrics_token = request.app[CONFIG_KEY].lan.metrics_token
    if metrics_token is not None and request.path == "/metrics":
        _check_metrics_token(request, metrics_token.get_secret_value())
    elif _needs_token(request):
        token = bearer_token(request)
        request[PRINCIPAL] = await request.app[AUTH_KEY].async_authenticate(token)
    return await handler(request)


MIDDLEWARES = [error_middleware, metrics_middleware, auth_middleware]
