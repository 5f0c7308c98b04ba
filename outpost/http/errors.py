"""Every failure of a request as ``{"error": {"code", "message"}}``: the one error middleware.

Handlers raise :class:`ApiError` (central's ``CentralError`` is one); the
middleware made by :func:`error_middleware` turns it, aiohttp's own HTTP
exceptions (404, 405 with ``Allow``, 413 …) and anything unexpected into an
answer. An encoding or range error that still escapes from deep code
(``UnicodeError``, ``OverflowError``, ``RecursionError``) is the caller's bad
input: a 400, logged as a warning, never a 500. What differs between the
services is said in :class:`ErrorAnswers`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """A refusal with an HTTP status, a machine code and one human sentence.

    ``extra`` goes into the error object beside them (e.g. ``problems``).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = extra


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def error_response(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    return web.json_response(error_body(code, message, **extra), status=status, headers=headers)


# Codes for aiohttp's own HTTP exceptions (routing, methods, size limits); a
# service adds or replaces entries (``ErrorAnswers.codes``).
HTTP_CODES: dict[int, tuple[str, str]] = {
    400: ("bad_request", "The request is malformed."),
    404: ("not_found", "There is nothing at this address."),
    405: ("method_not_allowed", "This address does not accept that method."),
    413: ("body_too_large", "The request body is larger than accepted."),
    415: ("unsupported_media_type", "Send the body as JSON."),
}


def _json(request: web.Request, error: ApiError) -> web.StreamResponse:
    return error_response(error.status, error.code, error.message, error.headers, **error.extra)


def _nothing(request: web.Request, exc: Exception) -> ApiError | web.StreamResponse | None:
    return None


@dataclass(frozen=True)
class ErrorAnswers:
    """What one service's error answers say.

    ``service`` names it in sentences ("the gateway", "the admin API");
    ``body_limit`` is the request body cap the 413 states; ``internal`` the
    500's code and sentence; ``codes`` the service's entries over
    :data:`HTTP_CODES`; ``translate`` turns the service's own exceptions into
    an :class:`ApiError` or a whole answer (None: not one of its own);
    ``respond`` renders an error (JSON by default; central renders a page for
    a browser).
    """

    service: str
    body_limit: Callable[[web.Request], int]
    internal: tuple[str, str]
    codes: Mapping[int, tuple[str, str]] = field(default_factory=dict)
    translate: Callable[[web.Request, Exception], ApiError | web.StreamResponse | None] = _nothing
    respond: Callable[[web.Request, ApiError], web.StreamResponse] = _json

    def of_http(self, request: web.Request, exc: web.HTTPException) -> ApiError:
        code, message = {**HTTP_CODES, **self.codes}.get(exc.status, ("http_error", exc.reason))
        if exc.status == 413:
            limit = self.body_limit(request)
            message = f"The request body is larger than {self.service} accepts ({limit} bytes)."
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return ApiError(exc.status, code, message, headers=headers)

    def of_exception(self, request: web.Request, exc: Exception) -> web.StreamResponse:
        answer = exc if isinstance(exc, ApiError) else self.translate(request, exc)
        if isinstance(answer, web.StreamResponse):
            return answer
        if answer is None and isinstance(exc, UnicodeError | OverflowError | RecursionError):
            # Input that got past the readers: still the caller's, still a 4xx.
            logger.warning(
                "refused input on %s %s: %s", request.method, request.path, type(exc).__name__
            )
            answer = ApiError(
                400, "bad_request", f"The request holds a value {self.service} cannot read."
            )
        if answer is None:  # the loop boundary of a request: log it, answer without internals
            logger.exception("unexpected error on %s %s", request.method, request.path)
            answer = ApiError(500, *self.internal)
        return self.respond(request, answer)


def error_middleware(answers: ErrorAnswers) -> Middleware:
    """The outermost middleware of a service whose errors ``answers`` says."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise  # a redirect, not an error
            return answers.respond(request, answers.of_http(request, exc))
        except Exception as exc:  # noqa: BLE001 - the loop boundary: of_exception logs it
            return answers.of_exception(request, exc)

    return middleware
