"""Housekeeping the scheduler runs on the store: retention of finished history.

Hourly (``gateway/scheduler.py``): activities central checked in or recalled
long ago, with every envelope final and every attachment at central, are
forgotten; expired sessions go.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, delete, select

from gateway.store.schema import (
    APPLIED,
    CHECKED_IN,
    RECALLED,
    REJECTED,
    activities,
    attachments,
    envelope_attachments,
    envelopes,
    sessions,
)
from gateway.store.tasks import WriteTask


@dataclass(frozen=True, slots=True)
class ExpireHistory(WriteTask[int]):
    """Forget finished activities that left the offline list before ``before``; how many."""

    before: datetime

    def run(self, conn: Connection) -> int:
        return expire_history(conn, self.before)


@dataclass(frozen=True, slots=True)
class ExpireSessions(WriteTask[int]):
    """Delete the sessions that expired before ``now``; how many."""

    now: datetime

    def run(self, conn: Connection) -> int:
        return expire_sessions(conn, self.now)


def expire_history(conn: Connection, before: datetime) -> int:
    """Forget activities that left the offline list before ``before``.

    Only activities central checked in or recalled, and only when every one
    of their envelopes reached a final state and every attachment they
    reference reached central (or central refused it): unsent field data is
    never expired. Blob files themselves are kept.
    """
    finished = select(activities.c.id).where(
        and_(
            activities.c.state.in_((CHECKED_IN, RECALLED)),
            activities.c.updated_at < before,
            ~select(envelopes.c.envelope_id)
            .where(
                and_(
                    envelopes.c.activity_id == activities.c.id,
                    envelopes.c.state.not_in((APPLIED, REJECTED)),
                )
            )
            .exists(),
            ~select(envelope_attachments.c.sha256)
            .join(envelopes, envelopes.c.envelope_id == envelope_attachments.c.envelope_id)
            .join(attachments, attachments.c.sha256 == envelope_attachments.c.sha256)
            .where(
                envelopes.c.activity_id == activities.c.id,
                attachments.c.uploaded_at.is_(None),
                attachments.c.upload_error.is_(None),
            )
            .exists(),
        )
    )
    ids = list(conn.execute(finished).scalars())
    if not ids:
        return 0
    gone = select(envelopes.c.envelope_id).where(envelopes.c.activity_id.in_(ids))
    conn.execute(delete(envelope_attachments).where(envelope_attachments.c.envelope_id.in_(gone)))
    conn.execute(delete(envelopes).where(envelopes.c.activity_id.in_(ids)))
    conn.execute(delete(activities).where(activities.c.id.in_(ids)))
    return len(ids)


def expire_sessions(conn: Connection, now: datetime) -> int:
    return conn.execute(delete(sessions).where(sessions.c.expires_at < now)).rowcount
