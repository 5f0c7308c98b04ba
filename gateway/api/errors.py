"""Errors a person sees: ``{"error": {"code", "message"}}`` with a 4xx status.

Handlers and store work items raise ``ApiError``; the error middleware turns
it (and aiohttp's own HTTP exceptions, and anything unexpected) into JSON.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web


class ApiError(Exception):
    """A refusal with an HTTP status, a machine code and one human sentence."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    return web.json_response(error_body(code, message, **extra), status=status, headers=headers)


# Codes for aiohttp's own HTTP exceptions (routing, methods, size limits).
HTTP_CODES: dict[int, tuple[str, str]] = {
    400: ("bad_request", "The request is malformed."),
    401: ("unauthorized", "Sign in first."),
    403: ("forbidden", "You may not do that."),
    404: ("not_found", "There is nothing at this address."),
    405: ("method_not_allowed", "This address does not accept that method."),
    413: ("body_too_large", "The request body is larger than the gateway accepts."),
    415: ("unsupported_media_type", "Send the body as JSON."),
}


def disk_full(free_bytes: int, floor_bytes: int) -> ApiError:
    return ApiError(
        507,
        "disk_full",
        f"The gateway's disk is nearly full ({free_bytes // (1024 * 1024)} MB free, "
        f"floor {floor_bytes // (1024 * 1024)} MB): new envelopes and files are refused "
        "until space is freed; everything already saved is kept.",
    )
