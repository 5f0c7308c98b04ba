"""What the site lead's Site screen shows of the store (``GET /api/v1/site``).

One read transaction of indexed queries, polled while the screen is open
(``docs/benchmarks.md`` has its cost): envelopes by state, the oldest
waiting, every rejection with what happened after it, activities, who is
signed in, files to go up, the last sync.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, select

from gateway.store.attachments import upload_counts
from gateway.store.meta import get_meta
from gateway.store.schema import (
    ENVELOPE_STATES,
    META_LAST_SYNC,
    QUEUED,
    REJECTED,
    SENT,
    STORED,
    activities,
    envelopes,
    sessions,
    users,
)
from gateway.store.tasks import ReadTask
from outpost.times import iso, utcnow

REJECTIONS_LIMIT = 200  # newest first; the total is always given


@dataclass(frozen=True, slots=True)
class SiteState(ReadTask[dict[str, Any]]):
    """Everything the store knows for the Site screen (``site_state``)."""

    def run(self, conn: Connection) -> dict[str, Any]:
        return site_state(conn)


def _age_s(at: datetime | None, now: datetime) -> float | None:
    return None if at is None else round(max(0.0, (now - at).total_seconds()), 3)


def _oldest_waiting(conn: Connection, now: datetime) -> dict[str, Any] | None:
    """The envelope waiting longest to reach central (completed work: queued or sent)."""
    row = conn.execute(
        select(
            envelopes.c.envelope_id,
            envelopes.c.activity_id,
            envelopes.c.author,
            envelopes.c.seq,
            envelopes.c.state,
            envelopes.c.received_at,
            activities.c.title,
        )
        .join(activities, activities.c.id == envelopes.c.activity_id)
        .where(envelopes.c.state.in_((QUEUED, SENT)))
        .order_by(envelopes.c.received_at, envelopes.c.envelope_id)
        .limit(1)
    ).first()
    if row is None:
        return None
    return {
        "envelope_id": row.envelope_id,
        "activity_id": row.activity_id,
        "activity_title": row.title,
        "author": row.author,
        "seq": row.seq,
        "state": row.state,
        "received_at": iso(row.received_at),
        "age_s": _age_s(row.received_at, now),
    }


def _after(rejected: Any, latest: Any | None) -> dict[str, Any]:
    """What became of a rejection: corrected by a later save, or still open, or moot."""
    if latest is not None and latest.seq > rejected.seq:
        return {
            "what": "corrected",
            "seq": latest.seq,
            "status": latest.status,
            "state": latest.state,
            "at": iso(latest.received_at),
        }
    if rejected.activity_state == "recalled":
        return {"what": "canceled", "at": iso(rejected.recalled_at)}
    if rejected.activity_state == "checked_in":
        return {"what": "checked_in", "at": iso(rejected.checked_in_at)}
    return {"what": "open"}


def _rejections(conn: Connection) -> tuple[list[dict[str, Any]], int]:
    total = conn.execute(
        select(func.count()).select_from(envelopes).where(envelopes.c.state == REJECTED)
    ).scalar_one()
    rows = conn.execute(
        select(
            envelopes.c.envelope_id,
            envelopes.c.activity_id,
            envelopes.c.author,
            envelopes.c.seq,
            envelopes.c.status,
            envelopes.c.code,
            envelopes.c.reason,
            envelopes.c.received_at,
            envelopes.c.result_at,
            activities.c.title,
            activities.c.state.label("activity_state"),
            activities.c.recalled_at,
            activities.c.checked_in_at,
            users.c.display_name,
        )
        .join(activities, activities.c.id == envelopes.c.activity_id)
        .outerjoin(users, users.c.username == envelopes.c.author)
        .where(envelopes.c.state == REJECTED)
        .order_by(envelopes.c.result_at.desc(), envelopes.c.envelope_id)
        .limit(REJECTIONS_LIMIT)
    ).all()
    # The newest save of each activity with a rejection (ix_envelopes_activity_seq).
    ids = sorted({r.activity_id for r in rows})
    latest: dict[str, Any] = {}
    if ids:
        newest = (
            select(envelopes.c.activity_id, func.max(envelopes.c.seq).label("seq"))
            .where(envelopes.c.activity_id.in_(ids))
            .group_by(envelopes.c.activity_id)
            .subquery()
        )
        for row in conn.execute(
            select(
                envelopes.c.activity_id,
                envelopes.c.seq,
                envelopes.c.status,
                envelopes.c.state,
                envelopes.c.received_at,
            ).join(
                newest,
                and_(
                    newest.c.activity_id == envelopes.c.activity_id,
                    newest.c.seq == envelopes.c.seq,
                ),
            )
        ).all():
            latest[row.activity_id] = row
    out = [
        {
            "envelope_id": r.envelope_id,
            "activity_id": r.activity_id,
            "activity_title": r.title,
            "author": r.author,
            "author_name": r.display_name,
            "seq": r.seq,
            "status": r.status,
            "code": r.code,
            "reason": r.reason,
            "saved_at": iso(r.received_at),
            "rejected_at": iso(r.result_at),
            "after": _after(r, latest.get(r.activity_id)),
        }
        for r in rows
    ]
    return out, int(total)


def site_state(conn: Connection) -> dict[str, Any]:
    """Everything the store knows for the Site screen (one read transaction)."""
    now = utcnow()
    counts = dict.fromkeys(ENVELOPE_STATES, 0)
    for state, n in conn.execute(
        select(envelopes.c.state, func.count()).group_by(envelopes.c.state)
    ).all():
        counts[state] = int(n)
    rejections, total = _rejections(conn)
    activity_counts = {
        str(state): int(n)
        for state, n in conn.execute(
            select(activities.c.state, func.count()).group_by(activities.c.state)
        ).all()
    }
    signed_in = conn.execute(
        select(func.count(func.distinct(sessions.c.username))).where(sessions.c.expires_at > now)
    ).scalar_one()
    return {
        "envelopes": counts,
        "drafts": counts[STORED],
        "oldest_waiting": _oldest_waiting(conn, now),
        "rejections": rejections,
        "rejections_total": total,
        "rejections_open": sum(1 for r in rejections if r["after"]["what"] == "open"),
        "activities": activity_counts,
        "crew_signed_in": int(signed_in),
        "files": upload_counts(conn),
        "last_sync": get_meta(conn, META_LAST_SYNC),
    }
