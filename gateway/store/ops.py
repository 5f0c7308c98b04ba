"""Writes that arrive from central (dispatch, recall, users) and small shared helpers.

Every function takes a SQLAlchemy ``Connection`` and runs inside the
caller's transaction: pass them to ``store.async_write`` (for example
``await store.async_write(lambda c: upsert_activity(c, act, holder, at))``).
The downlink calls them when Dispatch / Recall / UserPush messages arrive;
tests and the checkout view use them too.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from gateway.store.schema import (
    CHECKED_IN,
    OFFLINE,
    RECALLED,
    activities,
    meta,
    offline_types,
    sessions,
    users,
)
from outpost.wire.schemas import ActivityWire, UserPush


def utcnow() -> datetime:
    return datetime.now(UTC)


def upsert_activity(
    conn: Connection, activity: ActivityWire, holder: str, dispatched_at: datetime
) -> None:
    """Insert or refresh an activity checked out to this gateway (it becomes ``offline``)."""
    values = {
        "title": activity.title,
        "type": activity.type,
        "form": activity.form.model_dump_json(),
        "form_version": activity.form_version,
        "responsible": activity.responsible,
        "version": activity.version,
        "holder": holder,
        "dispatched_at": dispatched_at,
        "state": OFFLINE,
        "checked_in_at": None,
        "recalled_at": None,
        "recall_reason": None,
        "updated_at": utcnow(),
    }
    stmt = sqlite_insert(activities).values(id=activity.id, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=[activities.c.id], set_=values))


def recall_activity(conn: Connection, activity_id: str, reason: str, recalled_at: datetime) -> bool:
    """Central took the activity back: crews see it canceled and can no longer write it."""
    result = conn.execute(
        update(activities)
        .where(activities.c.id == activity_id)
        .values(state=RECALLED, recalled_at=recalled_at, recall_reason=reason, updated_at=utcnow())
    )
    return result.rowcount > 0


def check_in_activity(conn: Connection, activity_id: str, at: datetime) -> bool:
    """Central applied the completed upload: the activity leaves the offline list (rule 5)."""
    result = conn.execute(
        update(activities)
        .where(activities.c.id == activity_id)
        .values(state=CHECKED_IN, checked_in_at=at, updated_at=utcnow())
    )
    return result.rowcount > 0


def replace_users(conn: Connection, push: UserPush) -> None:
    """Make users and offline types exactly the pushed snapshot.

    Sessions of users who are gone or may no longer work offline end here.
    """
    now = utcnow()
    pushed = {u.username for u in push.users}
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
    allowed = {u.username for u in push.users if u.offline}
    revoked = select(sessions.c.username).distinct()
    for (username,) in conn.execute(revoked).all():
        if username not in pushed or username not in allowed:
            conn.execute(delete(sessions).where(sessions.c.username == username))
    conn.execute(delete(offline_types))
    if push.offline_types:
        conn.execute(insert(offline_types), [{"name": n} for n in sorted(set(push.offline_types))])


def set_meta(conn: Connection, key: str, value: str) -> None:
    stmt = sqlite_insert(meta).values(key=key, value=value)
    conn.execute(stmt.on_conflict_do_update(index_elements=[meta.c.key], set_={"value": value}))


def get_meta(conn: Connection, key: str) -> str | None:
    return conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar_one_or_none()
