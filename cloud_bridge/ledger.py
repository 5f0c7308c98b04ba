"""The envelope ledger: outcomes as results, and deciding held envelopes en bloc."""

from __future__ import annotations

import re
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud_bridge.models import APPLIED, HELD, REJECTED, Activity, LedgerEntry, utcnow
from outpost.wire.schemas import EnvelopeResult

MAX_REASON = 2000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clip(text: str, limit: int = MAX_REASON) -> str:
    """``text`` as every database and the wire can hold it, at most ``limit`` characters.

    Reasons quote what a gateway sent (field names, values): control
    characters are escaped (PostgreSQL refuses NUL in text; a newline would
    forge lines where it is shown) and lone surrogates too (no UTF-8 for them).
    """
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def result_of(entry: LedgerEntry) -> EnvelopeResult:
    """The answer recorded for a decided envelope (the same every time it is asked)."""
    assert entry.outcome in (APPLIED, REJECTED), entry.outcome
    assert entry.applied_at is not None
    return EnvelopeResult(
        envelope_id=UUID(entry.envelope_id),
        activity_id=entry.activity_id,
        outcome="applied" if entry.outcome == APPLIED else "rejected",
        code=entry.code,
        reason=entry.reason,
        applied_at=entry.applied_at,
        activity_version=entry.activity_version,
        checked_in=entry.checked_in,
    )


def reject_held(
    session: Session, activity: Activity, code: str, reason: str
) -> list[tuple[str, EnvelopeResult]]:
    """Reject every envelope still held for the activity's current check-out."""
    held = session.scalars(
        select(LedgerEntry)
        .where(
            LedgerEntry.activity_id == activity.id,
            LedgerEntry.checkout_no == activity.checkout_no,
            LedgerEntry.outcome == HELD,
        )
        .order_by(LedgerEntry.seq)
    ).all()
    now = utcnow()
    out: list[tuple[str, EnvelopeResult]] = []
    for entry in held:
        entry.outcome = REJECTED
        entry.code = code
        entry.reason = clip(reason)
        entry.applied_at = now
        entry.activity_version = activity.version
        entry.payload = None
        out.append((entry.gateway_id, result_of(entry)))
    session.flush()
    return out
