"""Reading a JSON request body: the one reader both services use.

Whatever the bytes — not UTF-8, nested 200,000 deep, a number of 5,000
digits, a lone surrogate, not an object — the answer is a 4xx
:class:`~outpost.http.errors.ApiError` naming what is wrong, never a 500.
The body is parsed once, by pydantic's JSON parser, strictly (``"3"`` is not
3, ``0`` is not false). What differs between the services (code names, and
whether a text may hold NUL) is said in :class:`BodyCodes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import pydantic_core
from aiohttp import web
from pydantic import BaseModel, ValidationError

from outpost.http.errors import ApiError
from outpost.wire.codec import describe_validation

M = TypeVar("M", bound=BaseModel)

MAX_PROBLEMS = 20


@dataclass(frozen=True)
class BodyCodes:
    """One service's codes for a body it cannot take.

    ``storable_text``: refuse a text holding NUL (PostgreSQL takes none) as
    ``malformed``, as if it were not JSON at all.
    """

    empty: str
    empty_message: str
    malformed: str
    invalid: str = "invalid_body"
    storable_text: bool = False


async def read_json(request: web.Request, codes: BodyCodes) -> Any:
    """The body as JSON of any shape (a dict, a list …)."""
    raw = await _raw(request, codes)
    try:
        data = pydantic_core.from_json(raw)
    except ValueError as exc:  # also: not UTF-8, too deep, too many digits
        raise _malformed(codes, str(exc)) from None
    _check_text(codes, data)
    return data


async def read_body(
    request: web.Request,
    model: type[M],
    codes: BodyCodes,
    *,
    invalid: str | None = None,
    optional: bool = False,
) -> M:
    """The body as ``model``; ``optional``: no body is ``model``'s defaults.

    ``invalid`` replaces the code of a body that is JSON but not ``model``.
    """
    if optional and not request.can_read_body:
        return model.model_validate({})
    raw = await _raw(request, codes)  # over client_max_size: 413 via the error middleware
    code = invalid or codes.invalid
    try:
        body = model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise _refusal(exc, codes, code) from None
    _check_text(codes, body.model_dump())
    return body


async def _raw(request: web.Request, codes: BodyCodes) -> bytes:
    raw = await request.read()
    if not raw.strip():
        raise ApiError(400, codes.empty, codes.empty_message)
    return raw


def _malformed(codes: BodyCodes, detail: str) -> ApiError:
    detail = detail.strip()
    return ApiError(
        400,
        codes.malformed,
        "The request body is not valid JSON" + (f": {detail[:200]}." if detail else "."),
    )


def _refusal(exc: ValidationError, codes: BodyCodes, code: str) -> ApiError:
    errors = exc.errors()
    first = errors[0]
    if first["type"] == "json_invalid":
        # The parser says what and where (a number of thousands of digits, …).
        return _malformed(codes, str(first.get("ctx", {}).get("error", "")))
    if first["type"] == "model_type" and not first["loc"]:
        return ApiError(400, code, "The request body must be a JSON object.")
    return ApiError(
        400,
        code,
        f"The request body is not valid: {describe_validation(exc)}.",
        problems=[
            {
                "field": ".".join(str(p) for p in e["loc"]),
                "problem": "unknown field" if e["type"] == "extra_forbidden" else e["msg"],
            }
            for e in errors[:MAX_PROBLEMS]
        ],
    )


def _check_text(codes: BodyCodes, value: Any) -> None:
    if not codes.storable_text:
        return
    stack = [value]
    while stack:  # no recursion: the parser's depth limit is not ours
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ApiError(400, codes.malformed, "A text in the body holds a NUL character.")
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:  # the parser refuses one; said again, to be sure
                    raise ApiError(
                        400, codes.malformed, "A text in the body holds a lone UTF-16 surrogate."
                    ) from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
