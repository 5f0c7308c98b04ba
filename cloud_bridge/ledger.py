"""The envelope ledger: outcomes as results, and deciding held envelopes en bloc."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud_bridge.models import APPLIED, HELD, REJECTED, Activity, LedgerEntry, utcnow
from outpost.wire.schemas import EnvelopeResult

MAX_REASON = 2000


def clip(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…"


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
