"""Time as both services write it: aware UTC, ISO 8601 with ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """``2026-12-02T03:00:00.123456Z`` (None stays None)."""
    return value.isoformat().replace("+00:00", "Z") if value is not None else None
