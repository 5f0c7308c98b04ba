"""The LAN API's middlewares, in the one order they run (outermost first):

1. ``error_middleware``  — every failure becomes ``{"error": {"code", "message"}}``
   (4xx for the caller's mistakes; never a traceback).
2. ``metrics_middleware`` — request counts and latency by route.
3. ``auth_middleware``   — bearer token for everything under ``/api/`` except
   sign-in (and ``/metrics`` when ``lan.metrics_auth``, or only its own
   ``lan.metrics_token`` when that is set); the web app's static
   files and ``/healthz`` stay public. A path or method no route has is
   answered (404, 405 with ``Allow``) before the token is looked at.

Input is read through ``gateway.api.inputs``, which refuses malformed values
with a 4xx; as a last line, an encoding or range error that still escapes
from deep code (``UnicodeError``, ``OverflowError``, ``RecursionError``) is
the caller's bad input too: a 400, logged as a warning, never a 500.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from sqlalchemy.exc import OperationalError

from gateway.api.errors import HTTP_CODES, ApiError, error_response
from gateway.api.inputs import bearer_token
from gateway.api.keys import AUTH_KEY, CONFIG_KEY, METRICS_KEY, PRINCIPAL
from gateway.store import StoreClosedError

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC = {("POST", "/api/v1/session")}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers, **exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, message = HTTP_CODES.get(exc.status, ("http_error", exc.reason))
        if exc.status == 413:
            limit = request.app[CONFIG_KEY].lan.max_body_bytes
            message = f"The request body is larger than the gateway accepts ({limit} bytes)."
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_response(exc.status, code, message, headers)
    except StoreClosedError:
        return error_response(503, "shutting_down", "The gateway is restarting; try again shortly.")
    except TimeoutError:
        return error_response(504, "timeout", "Central did not answer in time; try again.")
    except (UnicodeError, OverflowError, RecursionError) as exc:
        # Input that got past the readers: still the caller's, still a 4xx.
        logger.warning(
            "refused input on %s %s: %s", request.method, request.path, type(exc).__name__
        )
        return error_response(
            400, "bad_request", "The request holds a value the gateway cannot read."
        )
    except OperationalError as exc:
        if "full" in str(exc.orig).lower():
            return error_response(
                507, "disk_full", "The gateway's disk is full; nothing new can be saved."
            )
        logger.exception("database error on %s %s", request.method, request.path)
        return _internal()
    except Exception:  # the loop boundary of a request: log it, answer JSON
        logger.exception("unexpected error on %s %s", request.method, request.path)
        return _internal()


def _internal() -> web.Response:
    return error_response(
        500, "internal_error", "Something went wrong inside the gateway; it has been logged."
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
    path = request.path
    if path.startswith("/api/"):
        return (request.method, path) not in PUBLIC
    if path == "/metrics":
        return request.app[CONFIG_KEY].lan.metrics_auth
    return False


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
