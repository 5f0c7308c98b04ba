"""Every rejected envelope across the fleet, newest first, and what happened after it.

"After": a later envelope of the same activity that central applied (later in
``(checkout_no, seq)`` order) is the correction; a canceled activity closes
the matter; otherwise the rejection is still *open*: the crew has not sent a
corrected envelope that applied.

Blocking; takes an open :class:`Session`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from cloud_bridge.errors import bad_request
from cloud_bridge.models import APPLIED, CANCELED, REJECTED, Activity, LedgerEntry
from outpost.times import iso as _iso

MAX_LIMIT = 500
CORRECTED = "corrected"
OPEN = "open"
CLOSED_BY_CANCEL = "canceled"


def rejections(
    session: Session,
    *,
    limit: int = 50,
    before: str | None = None,
    gateway_id: str | None = None,
    code: str | None = None,
    activity_id: str | None = None,
    still_open: bool = False,
    mine: str | None = None,
) -> dict[str, Any]:
    """One page of rejections, newest first; ``next`` is the cursor for the page after it.

    ``mine``: only those on activities this user is responsible for or holds,
    or that they wrote (a crew member's own).
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise bad_request(f"limit must be a whole number from 1 to {MAX_LIMIT}.", "invalid_limit")
    stmt = select(LedgerEntry).where(LedgerEntry.outcome == REJECTED)
    if gateway_id:
        stmt = stmt.where(LedgerEntry.gateway_id == gateway_id)
    if code:
        stmt = stmt.where(LedgerEntry.code == code)
    if activity_id:
        stmt = stmt.where(LedgerEntry.activity_id == activity_id)
    if mine is not None:
        theirs = select(Activity.id).where(
            or_(Activity.responsible == mine, Activity.holder_user == mine)
        )
        stmt = stmt.where(or_(LedgerEntry.author == mine, LedgerEntry.activity_id.in_(theirs)))
    if before:
        anchor = session.get(LedgerEntry, before)
        if anchor is None:
            raise bad_request(
                "before must be the envelope id of a listed rejection.", "invalid_cursor"
            )
        stmt = _older_than(stmt, anchor)
    stmt = stmt.order_by(LedgerEntry.arrived_at.desc(), LedgerEntry.envelope_id.desc())
    items: list[dict[str, Any]] = []
    more = False
    page_stmt = stmt
    # "Still open" is known only after describing: read on until the page is full.
    while True:
        page = list(session.scalars(page_stmt.limit(limit + 1)))
        for item in describe(session, page):
            if still_open and item["after"]["state"] != OPEN:
                continue
            if len(items) == limit:
                more = True
                break
            items.append(item)
        if more or len(page) <= limit:
            break
        page_stmt = _older_than(stmt, page[-1])
    return {"rejections": items, "next": items[-1]["envelope_id"] if more else None}


def _older_than(stmt: Any, anchor: LedgerEntry) -> Any:
    return stmt.where(
        or_(
            LedgerEntry.arrived_at < anchor.arrived_at,
            and_(
                LedgerEntry.arrived_at == anchor.arrived_at,
                LedgerEntry.envelope_id < anchor.envelope_id,
            ),
        )
    )


def describe(session: Session, entries: list[LedgerEntry]) -> list[dict[str, Any]]:
    """Rejections as the admin reads them, each with what happened after it."""
    ids = sorted({e.activity_id for e in entries})
    activities = (
        {a.id: a for a in session.scalars(select(Activity).where(Activity.id.in_(ids)))}
        if ids
        else {}
    )
    applied: dict[str, list[LedgerEntry]] = {}
    if ids:
        for a in session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.activity_id.in_(ids), LedgerEntry.outcome == APPLIED)
            .order_by(LedgerEntry.checkout_no, LedgerEntry.seq)
        ):
            applied.setdefault(a.activity_id, []).append(a)
    out = []
    for e in entries:
        activity = activities.get(e.activity_id)
        fix = next(
            (
                a
                for a in applied.get(e.activity_id, [])
                if (a.checkout_no, a.seq) > (e.checkout_no, e.seq)
            ),
            None,
        )
        if fix is not None:
            after = {
                "state": CORRECTED,
                "envelope_id": fix.envelope_id,
                "seq": fix.seq,
                "status": fix.status,
                "applied_at": _iso(fix.applied_at),
            }
        elif activity is not None and activity.state == CANCELED:
            after = {"state": CLOSED_BY_CANCEL, "at": _iso(activity.canceled_at)}
        else:
            after = {"state": OPEN}
        out.append(
            {
                "envelope_id": e.envelope_id,
                "gateway_id": e.gateway_id,
                "author": e.author,
                "activity_id": e.activity_id,
                "activity_title": activity.title if activity else None,
                "seq": e.seq,
                "status": e.status,
                "code": e.code,
                "reason": e.reason,
                "created_at": _iso(e.created_at),
                "received_at": _iso(e.received_at),
                "arrived_at": _iso(e.arrived_at),
                "rejected_at": _iso(e.applied_at),
                "after": after,
            }
        )
    return out
