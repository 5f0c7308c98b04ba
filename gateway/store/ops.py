"""Writes that arrive from central (dispatch, recall, users) and small shared helpers.

Every function takes a SQLAlchemy ``Connection`` and runs inside the
caller's transaction: pass them to ``store.async_write`` (for example
``await store.async_write(lambda c: upsert_activity(c, act, holder, at))``).
The downlink calls them when Dispatch / Recall / UserPush messages arrive;
tests and the checkout view use them too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from gateway.store.form_versions import keep_form_version
from gateway.store.schema import (
    CHECKED_IN,
    OFFLINE,
    RECALLED,
    activities,
    envelopes,
    meta,
    offline_types,
    sessions,
    users,
)
from outpost.times import utcnow as utcnow
from outpost.wire.schemas import ActivityWire, ReviewNote, UserPush


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
        conn, activity.type, activity.form_version, activity.form.model_dump_json(), now
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


def replace_users(conn: Connection, push: UserPush) -> list[str]:
    """Make users and offline types exactly the pushed snapshot; return whose sessions ended.

    A user's sessions end here when they are gone, may no longer work
    offline, or their password changed centrally (a new hash): a stolen or
    shared password stops working on the gateway at the next push.
    """
    now = utcnow()
    before = {
        r.username: r.password_hash
        for r in conn.execute(select(users.c.username, users.c.password_hash))
    }
    pushed = {u.username: u for u in push.users}
    conn.execute(delete(users))
    if push.users:
        conn.execute(
            insert(users),
            [
                {
                    "username": u.username,
                    "password_hash": u.password_hash,
                    "offline": u.offline,
                    "display_name": u.display_name,
                    "updated_at": now,
                    "site_lead": u.site_lead,
                }
                for u in push.users
            ],
        )
    ended: list[str] = []
    for (username,) in conn.execute(select(sessions.c.username).distinct()).all():
        user = pushed.get(username)
        if user is None or not user.offline or user.password_hash != before.get(username):
            conn.execute(delete(sessions).where(sessions.c.username == username))
            ended.append(username)
    conn.execute(delete(offline_types))
    if push.offline_types:
        conn.execute(insert(offline_types), [{"name": n} for n in sorted(set(push.offline_types))])
    return sorted(ended)


def set_meta(conn: Connection, key: str, value: str) -> None:
    stmt = sqlite_insert(meta).values(key=key, value=value)
    conn.execute(stmt.on_conflict_do_update(index_elements=[meta.c.key], set_={"value": value}))


def get_meta(conn: Connection, key: str) -> str | None:
    return conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar_one_or_none()
