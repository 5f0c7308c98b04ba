"""Read queries behind the LAN API and the heartbeat.

Read tasks (``gateway/store/tasks.py``) for ``store.async_read``; they run on
a reader connection and see the last commit.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, and_, case, func, or_, select

from gateway.store.attachments import upload_counts
from gateway.store.form_versions import filled_against, form_text
from gateway.store.meta import get_meta
from gateway.store.schema import (
    ENVELOPE_STATES,
    META_LAST_SYNC,
    OFFLINE,
    QUEUED,
    RECALLED,
    REJECTED,
    SENT,
    activities,
    attachments,
    envelopes,
    sessions,
)
from gateway.store.store import database_bytes
from gateway.store.tasks import ReadTask
from outpost.times import iso as iso
from outpost.times import utcnow

REJECTED_LIST_LIMIT = 50
_FILLED_VERSION = filled_against()
_FILLED = _FILLED_VERSION.label("filled_version")


@dataclass(frozen=True, slots=True)
class ListActivities(ReadTask[list[dict[str, Any]]]):
    """The user's offline activities (and recalled ones, shown as canceled)."""

    username: str

    def run(self, conn: Connection) -> list[dict[str, Any]]:
        return list_activities(conn, self.username)


@dataclass(frozen=True, slots=True)
class ActivityDetail(ReadTask[dict[str, Any] | None]):
    """One of the user's activities with its form and latest envelope, or None."""

    username: str
    activity_id: str

    def run(self, conn: Connection) -> dict[str, Any] | None:
        return activity_detail(conn, self.username, self.activity_id)


@dataclass(frozen=True, slots=True)
class ActivityVisible(ReadTask[bool]):
    """Whether the user holds or is responsible for the activity here."""

    username: str
    activity_id: str

    def run(self, conn: Connection) -> bool:
        return activity_visible(conn, self.username, self.activity_id)


@dataclass(frozen=True, slots=True)
class ListEnvelopes(ReadTask[list[dict[str, Any]]]):
    """The user's envelopes (of one activity, or all)."""

    username: str
    activity_id: str | None = None

    def run(self, conn: Connection) -> list[dict[str, Any]]:
        return list_envelopes(conn, self.username, self.activity_id)


@dataclass(frozen=True, slots=True)
class StoreStatus(ReadTask[dict[str, Any]]):
    """The gateway's state (``store_status``); ``only_user`` narrows its lists."""

    only_user: str | None = None

    def run(self, conn: Connection) -> dict[str, Any]:
        return store_status(conn, self.only_user)


@dataclass(frozen=True, slots=True)
class HeartbeatFigures(ReadTask[tuple[dict[str, Any], int, int]]):
    """``store_status``, the data dir's free bytes and the database's size (file + WAL).

    On the reader thread, so the filesystem calls stay off the loop too.
    """

    data_dir: Path
    db_path: Path

    def run(self, conn: Connection) -> tuple[dict[str, Any], int, int]:
        disk_free = shutil.disk_usage(self.data_dir).free
        return store_status(conn), disk_free, database_bytes(self.db_path)


def _mine(username: str) -> Any:
    return or_(activities.c.responsible == username, activities.c.holder == username)


def _progress(state: str, count: int, completed: bool) -> str:
    """The status crews see: not_started, in_progress, completed, canceled."""
    if state == RECALLED:
        return "canceled"
    if completed:
        return "completed"
    return "in_progress" if count else "not_started"


def _review(row: Any) -> dict[str, Any] | None:
    """Central's note when it sent the activity back for another round (else None)."""
    if row.review_note is None:
        return None
    return {
        "round": row.review_round,
        "note": row.review_note,
        "by": row.review_by,
        "at": iso(row.reviewed_at),
    }


def _summary(row: Any, count: int, last_seq: int, completed: bool) -> dict[str, Any]:
    review = _review(row)
    if review is not None and not count and not completed and row.state == OFFLINE:
        # Sent back: the last round's answers are there to correct.
        status = "in_progress"
    else:
        status = _progress(row.state, count, completed)
    return {
        "id": row.id,
        "title": row.title,
        "type": row.type,
        "responsible": row.responsible,
        "holder": row.holder,
        "version": row.version,
        # The version the crew fills in (gateway.store.form_versions): their
        # draft's, else the newest the activity was sent.
        "form_version": row.filled_version,
        "dispatched_at": iso(row.dispatched_at),
        "status": status,
        "read_only": row.state != OFFLINE or completed,
        "next_seq": max(last_seq, row.reopen_seq or 0) + 1,
        # This round of field work holds the envelopes after this seq (0: all).
        "round_after": row.reopen_seq or 0,
        "envelopes": count,
        "recall_reason": row.recall_reason,
        "review": review,
    }


def _envelope_stats(conn: Connection, activity_ids: list[str]) -> dict[str, tuple[int, int, bool]]:
    """Per activity: envelopes of the current round, the highest seq, completed this round."""
    if not activity_ids:
        return {}
    this_round = envelopes.c.seq > activities.c.reopen_seq
    completed = func.max(
        and_(envelopes.c.status == "completed", envelopes.c.state != REJECTED, this_round)
    )
    rows = conn.execute(
        select(
            envelopes.c.activity_id,
            func.sum(case((this_round, 1), else_=0)),
            func.max(envelopes.c.seq),
            completed,
        )
        .join(activities, activities.c.id == envelopes.c.activity_id)
        .where(envelopes.c.activity_id.in_(activity_ids))
        .group_by(envelopes.c.activity_id)
    ).all()
    return {r[0]: (int(r[1]), int(r[2] or 0), bool(r[3])) for r in rows}


def list_activities(conn: Connection, username: str) -> list[dict[str, Any]]:
    """The user's offline activities (and recalled ones, shown as canceled)."""
    rows = conn.execute(
        select(activities, _FILLED)
        .where(_mine(username), activities.c.state.in_((OFFLINE, RECALLED)))
        .order_by(activities.c.dispatched_at, activities.c.id)
    ).all()
    stats = _envelope_stats(conn, [r.id for r in rows])
    return [_summary(r, *stats.get(r.id, (0, 0, False))) for r in rows]


def envelope_view(row: Any, with_body: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "envelope_id": row.envelope_id,
        "activity_id": row.activity_id,
        "author": row.author,
        "seq": row.seq,
        "status": row.status,
        "state": row.state,
        "code": row.code,
        "reason": row.reason,
        "base_version": row.base_version,
        "form_version": row.form_version,
        "created_at": iso(row.created_at),
        "received_at": iso(row.received_at),
        "sent_at": iso(row.sent_at),
        "result_at": iso(row.result_at),
    }
    if with_body:
        body = json.loads(row.body)
        out["record"] = body.get("record", {})
        out["tables"] = body.get("tables", {})
        out["attachments"] = body.get("attachments", [])
    return out


def activity_detail(conn: Connection, username: str, activity_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        select(
            activities, _FILLED, form_text(activities.c.id, _FILLED_VERSION).label("form")
        ).where(
            activities.c.id == activity_id,
            _mine(username),
            activities.c.state.in_((OFFLINE, RECALLED)),
        )
    ).first()
    if row is None:
        return None
    stats = _envelope_stats(conn, [row.id]).get(row.id, (0, 0, False))
    out = _summary(row, *stats)
    out["form"] = json.loads(row.form)  # held: an activity's versions are never pruned
    latest = conn.execute(
        select(envelopes)
        .where(envelopes.c.activity_id == row.id)
        .order_by(envelopes.c.seq.desc())
        .limit(1)
    ).first()
    out["latest_envelope"] = envelope_view(latest, with_body=True) if latest else None
    return out


def activity_visible(conn: Connection, username: str, activity_id: str) -> bool:
    return (
        conn.execute(
            select(activities.c.id).where(activities.c.id == activity_id, _mine(username))
        ).first()
        is not None
    )


def list_envelopes(
    conn: Connection, username: str, activity_id: str | None
) -> list[dict[str, Any]]:
    """The user's envelopes: their own, and any on activities they hold or are responsible for."""
    query = (
        select(envelopes)
        .join(activities, activities.c.id == envelopes.c.activity_id)
        .where(or_(envelopes.c.author == username, _mine(username)))
    )
    if activity_id is not None:
        query = query.where(envelopes.c.activity_id == activity_id)
    rows = conn.execute(query.order_by(envelopes.c.activity_id, envelopes.c.seq)).all()
    return [envelope_view(r) for r in rows]


def store_status(conn: Connection, only_user: str | None = None) -> dict[str, Any]:
    """The gateway's state; with ``only_user`` its lists hold only that user's work.

    Counts, ages and sizes stay gateway-wide (the site's queue, not anyone's data).
    """
    counts = dict.fromkeys(ENVELOPE_STATES, 0)
    for state, n in conn.execute(
        select(envelopes.c.state, func.count()).group_by(envelopes.c.state)
    ).all():
        counts[state] = int(n)
    oldest = conn.execute(
        select(func.min(envelopes.c.received_at)).where(envelopes.c.state.in_((QUEUED, SENT)))
    ).scalar_one()
    oldest_age = None
    if oldest is not None:
        oldest_dt = (
            datetime.fromisoformat(str(oldest)) if not isinstance(oldest, datetime) else oldest
        )
        oldest_age = max(0.0, (utcnow() - oldest_dt).total_seconds())
    rejected = conn.execute(
        select(
            envelopes.c.envelope_id,
            envelopes.c.activity_id,
            envelopes.c.author,
            envelopes.c.seq,
            envelopes.c.code,
            envelopes.c.reason,
            envelopes.c.result_at,
        )
        .where(envelopes.c.state == REJECTED, *_own_envelopes(only_user))
        .order_by(envelopes.c.result_at.desc())
        .limit(REJECTED_LIST_LIMIT)
    ).all()
    activity_counts: dict[str, int] = {
        str(state): int(n)
        for state, n in conn.execute(
            select(activities.c.state, func.count()).group_by(activities.c.state)
        ).all()
    }
    partial = conn.execute(
        select(func.count()).select_from(attachments).where(attachments.c.complete.is_(False))
    ).scalar_one()
    devices = conn.execute(
        select(func.count(func.distinct(sessions.c.client))).where(sessions.c.expires_at > utcnow())
    ).scalar_one()
    return {
        "counts": counts,
        "devices": int(devices),  # distinct clients with a live session
        "oldest_pending_s": oldest_age,
        "rejected": [
            {
                "envelope_id": r.envelope_id,
                "activity_id": r.activity_id,
                "author": r.author,
                "seq": r.seq,
                "code": r.code,
                "reason": r.reason,
                "at": iso(r.result_at),
            }
            for r in rejected
        ],
        "activities": {k: int(v) for k, v in activity_counts.items()},
        "attachments_incomplete": int(partial),
        "attachments_upload": upload_counts(conn, only_user),
        "last_sync": get_meta(conn, META_LAST_SYNC),
    }


def _own_envelopes(username: str | None) -> list[Any]:
    if username is None:
        return []
    mine = select(activities.c.id).where(_mine(username)).scalar_subquery()
    return [or_(envelopes.c.author == username, envelopes.c.activity_id.in_(mine))]
