"""The one error type the central side raises for a person or a gateway to read.

``code`` is machine-readable and stable (documented in docs/central.md);
``message`` is one sentence a person understands; ``status`` is the HTTP
status the admin API answers with. It is an ``outpost.http.errors.ApiError``
(both services' error type), so the one error middleware answers it.
"""

from __future__ import annotations

from typing import Any

from outpost.http.errors import ApiError


class CentralError(ApiError):
    def __init__(
        self, code: str, message: str, status: int = 409, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, code, message, headers=headers)  # e.g. Retry-After on a 429

    def as_json(self) -> dict[str, dict[str, Any]]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


def not_found(what: str, key: str) -> CentralError:
    return CentralError("not_found", f"No {what} {key!r} exists.", 404)


def bad_request(message: str, code: str = "bad_request") -> CentralError:
    return CentralError(code, message, 400)
