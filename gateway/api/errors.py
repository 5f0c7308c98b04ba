"""Errors a person sees: ``{"error": {"code", "message"}}`` with a 4xx status.

Handlers and store work items raise ``ApiError`` (``outpost.http.errors``,
both services' one error type); the gateway's error middleware
(``gateway.api.middleware``) turns it, aiohttp's own HTTP exceptions and
anything unexpected into JSON, with the gateway's codes below.
"""

from __future__ import annotations

from outpost.http.errors import ApiError as ApiError
from outpost.http.errors import error_body as error_body
from outpost.http.errors import error_response as error_response

# The gateway's codes for aiohttp's own HTTP exceptions, over the shared ones.
HTTP_CODES: dict[int, tuple[str, str]] = {
    401: ("unauthorized", "Sign in first."),
    403: ("forbidden", "You may not do that."),
}


def disk_full(free_bytes: int, floor_bytes: int) -> ApiError:
    return ApiError(
        507,
        "disk_full",
        f"The gateway's disk is nearly full ({free_bytes // (1024 * 1024)} MB free, "
        f"floor {floor_bytes // (1024 * 1024)} MB): new envelopes and files are refused "
        "until space is freed; everything already saved is kept.",
    )
