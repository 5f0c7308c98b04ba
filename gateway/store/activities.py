"""Activities checked out to this gateway: dispatch (or check-out), recall, check-in.

The downlink runs these when Dispatch / Recall messages arrive, the
check-out view when central answers, the outbox when central applied an
activity's completed upload. Tasks for the store (``gateway/store/tasks.py``)
and the functions they run (which tests use to seed a database too).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from gateway.store.form_versions import keep_form_version
from gateway.store.schema import CHECKED_IN, OFFLINE, RECALLED, activities, envelopes
from gateway.store.tasks import WriteTask
from outpost.times import utcnow
from outpost.wire.schemas import ActivityWire, ReviewNote


@dataclass(frozen=True, slots=True)
class UpsertActivity(WriteTask[bool]):
    """Insert or refresh an activity checked out to this gateway (see ``upsert_activity``)."""

    activity: ActivityWire
    holder: str
    dispatched_at: datetime
    review: ReviewNote | None = None
    from_dispatch: bool = False

    def run(self, conn: Connection) -> bool:
        return upsert_activity(
            conn,
            self.activity,
            self.holder,
            self.dispatched_at,
            self.review,
            from_dispatch=self.from_dispatch,
        )


@dataclass(frozen=True, slots=True)
class RecallActivity(WriteTask[bool]):
    """Central took the activity back; True if this gateway held it."""

    activity_id: str
    reason: str
    recalled_at: datetime

    def run(self, conn: Connection) -> bool:
        return recall_activity(conn, self.activity_id, self.reason, self.recalled_at)


def upsert_activity(
    conn: Connection,
    activity: ActivityWire,
    holder: str,
    dispatched_at: datetime,
    review: ReviewNote | None = None,
    *,
    from_dispatch: bool = False,
) -> bool:
    """Insert or refresh an activity checked out to this gateway (it becomes ``offline``).

    A dispatch of an activity this gateway had checked in (central sent it back
    with a ``review`` note, or dispatched it again) starts a new round of field
    work: ``reopen_seq`` moves past the earlier envelopes, so they neither lock
    nor complete this round, and the next seq follows the highest one central
    or this gateway has seen. A ``review`` for a later round does the same even
    if the check-in's result has not arrived yet.

    ``from_dispatch``: a Dispatch from central older than this gateway's
    check-in of the activity (a late redelivery) is ignored; returns False then.
    """
    prev = conn.execute(
        select(
            activities.c.state,
            activities.c.review_round,
            activities.c.checked_in_at,
            activities.c.form_version,
        ).where(activities.c.id == activity.id)
    ).first()
    if (
        from_dispatch
        and prev is not None
        and prev.state == CHECKED_IN
        and prev.checked_in_at is not None
        and dispatched_at < prev.checked_in_at
        and (review is None or review.round <= (prev.review_round or 1))
    ):
        return False
    now = utcnow()
    keep_form_version(
        conn, activity.id, activity.form_version, activity.form.model_dump_json(), now
    )
    values: dict[str, Any] = {
        "title": activity.title,
        "type": activity.type,
        # The newest version sent; a late redelivery of an older dispatch
        # does not take a new draft back to an older form.
        "form_version": max(activity.form_version, prev.form_version if prev else 0),
        "responsible": activity.responsible,
        "version": activity.version,
        "holder": holder,
        "dispatched_at": dispatched_at,
        "state": OFFLINE,
        "checked_in_at": None,
        "recalled_at": None,
        "recall_reason": None,
        "updated_at": now,
    }
    new_round = prev is None or prev.state != OFFLINE
    if review is not None and (prev is None or review.round > (prev.review_round or 1)):
        new_round = True
    if new_round:
        own = conn.execute(
            select(func.max(envelopes.c.seq)).where(envelopes.c.activity_id == activity.id)
        ).scalar()
        values["reopen_seq"] = max(own or 0, review.after_seq if review else 0)
        values["review_round"] = review.round if review else None
        values["review_note"] = review.note if review else None
        values["review_by"] = review.reviewer if review else None
        values["reviewed_at"] = review.reviewed_at if review else None
    stmt = sqlite_insert(activities).values(id=activity.id, **{"reopen_seq": 0, **values})
    conn.execute(stmt.on_conflict_do_update(index_elements=[activities.c.id], set_=values))
    return True


def recall_activity(conn: Connection, activity_id: str, reason: str, recalled_at: datetime) -> bool:
    """Central took the activity back: crews see it canceled and can no longer write it."""
    result = conn.execute(
        update(activities)
        .where(activities.c.id == activity_id)
        .values(state=RECALLED, recalled_at=recalled_at, recall_reason=reason, updated_at=utcnow())
    )
    return result.rowcount > 0


def check_in_activity(
    conn: Connection, activity_id: str, at: datetime, envelope_id: str | None = None
) -> bool:
    """Central applied the completed upload: the activity leaves the offline list (rule 5).

    A check-in for an envelope of an earlier round (its seq at or below
    ``reopen_seq``: the activity was sent back since) changes nothing.
    """
    stmt = update(activities).where(activities.c.id == activity_id)
    if envelope_id is not None:
        seq = (
            select(envelopes.c.seq).where(envelopes.c.envelope_id == envelope_id).scalar_subquery()
        )
        stmt = stmt.where(func.coalesce(seq, activities.c.reopen_seq + 1) > activities.c.reopen_seq)
    result = conn.execute(stmt.values(state=CHECKED_IN, checked_in_at=at, updated_at=utcnow()))
    return result.rowcount > 0
