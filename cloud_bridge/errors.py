"""The one error type the central side raises for a person or a gateway to read.

``code`` is machine-readable and stable (documented in docs/central.md);
``message`` is one sentence a person understands; ``status`` is the HTTP
status the admin API answers with.
"""

from __future__ import annotations


class CentralError(Exception):
    def __init__(
        self, code: str, message: str, status: int = 409, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.headers = headers  # e.g. Retry-After on a 429 or 503

    def as_json(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


def not_found(what: str, key: str) -> CentralError:
    return CentralError("not_found", f"No {what} {key!r} exists.", 404)


def bad_request(message: str, code: str = "bad_request") -> CentralError:
    return CentralError(code, message, 400)
