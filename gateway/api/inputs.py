"""Reading a request's input: the one place headers, path segments and bodies are parsed.

Every reader bounds what it takes and answers a malformed value with a clear
4xx ``ApiError`` naming it, whatever the bytes: a header of non-UTF-8 or
latin-1 bytes, a 5,000-digit number, a path segment with a newline, JSON
nested 200,000 deep. Handlers take their input only through these.
"""

from __future__ import annotations

import re
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.errors import ApiError
from outpost.http import body
from outpost.http.body import BodyCodes
from outpost.passwords import MAX_PASSWORD_CHARS
from outpost.wire.schemas import ACTIVITY_ID_RE as ACTIVITY_ID_RE
from outpost.wire.schemas import SHA256_RE as SHA256_RE

M = TypeVar("M", bound=BaseModel)

# RFC 6750 token68, bounded: our tokens are 43 URL-safe base64 characters.
TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]{1,512}=*")
# ASCII digits only, at most 15 of them (a petabyte): int() of thousands of
# digits is refused by Python itself, and \d would take other scripts' digits.
RANGE_RE = re.compile(r"bytes ([0-9]{1,15})-([0-9]{1,15})/([0-9]{1,15})")


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)


# The gateway's codes for a body it cannot take (``outpost.http.body`` reads it).
BODY = BodyCodes(
    empty="empty_body",
    empty_message="Send a JSON object in the request body.",
    malformed="malformed_json",
)


async def read_body(request: web.Request, model: type[M], code: str = "invalid_body") -> M:
    """Parse and validate a JSON body strictly; every failure is a clear 400/413."""
    return await body.read_body(request, model, BODY, invalid=code)


def bearer_token(request: web.Request) -> str:
    """The token of ``Authorization: Bearer <token>``; 401 for anything else."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401,
            "unauthorized",
            "Sign in first: send Authorization: Bearer <token>.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not TOKEN_RE.fullmatch(token):  # bytes that are no token of ours (any encoding)
        raise ApiError(
            401,
            "invalid_token",
            "Your session has ended; sign in again.",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return token


def activity_id(request: web.Request) -> str:
    value = request.match_info["activity_id"]
    if not ACTIVITY_ID_RE.fullmatch(value):
        raise ApiError(404, "activity_not_found", "There is no such activity on this gateway.")
    return value


def sha256(request: web.Request) -> str:
    value = request.match_info["sha256"]
    if not SHA256_RE.fullmatch(value):
        raise ApiError(
            400,
            "invalid_sha256",
            "An attachment's address is its SHA-256: 64 lowercase hex digits.",
        )
    return value


def content_range(request: web.Request) -> tuple[int, int, int]:
    """``(start, end, total)`` of this request's part of a blob (``end`` inclusive)."""
    header = request.headers.get("Content-Range")
    length = request.content_length
    if header is None:
        if length is None:
            raise ApiError(
                411, "length_required", "Send Content-Length (or Content-Range) with the upload."
            )
        return 0, length - 1, length
    match = RANGE_RE.fullmatch(header.strip())
    if not match:
        raise ApiError(
            400,
            "invalid_range",
            "Content-Range must look like 'bytes START-END/TOTAL' with byte offsets.",
        )
    start, end, total = (int(g) for g in match.groups())
    if end < start or end >= total:
        raise ApiError(400, "invalid_range", "Content-Range's END must be within START..TOTAL-1.")
    if length is not None and length != end - start + 1:
        raise ApiError(
            400, "invalid_range", "Content-Length does not match the size given by Content-Range."
        )
    return start, end, total


def query_activity_id(request: web.Request) -> str | None:
    value = request.query.get("activity_id")
    if value is not None and not ACTIVITY_ID_RE.fullmatch(value):
        raise ApiError(404, "activity_not_found", "There is no such activity on this gateway.")
    return value
