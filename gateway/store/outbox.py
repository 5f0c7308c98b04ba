"""The outbox's database side: which envelopes go up next, and what central said.

Tasks for the store (``gateway/store/tasks.py``): the uplink hands them to
``store.async_write`` (the writer thread, inside its group commit).

Life of an envelope here::

    stored --(its activity's completed envelope arrives)--> queued
    queued --claim (batch_id set)--> publish --PUBACK--> sent
    sent --central's ack--> applied | rejected
    queued/sent --no ack in time, or reconnect, or restart--> queued (batch_id cleared)

Nothing leaves this table because of the broker: only central's
application-level result moves an envelope to a final state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, bindparam, select, update

from gateway.store.activities import check_in_activity
from gateway.store.meta import set_meta
from gateway.store.schema import (
    APPLIED,
    META_LAST_SYNC,
    QUEUED,
    REJECTED,
    SENT,
    envelopes,
)
from gateway.store.tasks import WriteTask
from outpost.wire.schemas import EnvelopeResult


@dataclass(frozen=True)
class Claimed:
    envelope_id: str
    activity_id: str
    body: str  # canonical WireEnvelope JSON


@dataclass(frozen=True, slots=True)
class ClaimBatch(WriteTask[list[Claimed]]):
    """Reserve the next queued envelopes for ``batch_id`` (see ``claim_batch``)."""

    batch_id: str
    max_envelopes: int
    max_bytes: int

    def run(self, conn: Connection) -> list[Claimed]:
        return claim_batch(
            conn, self.batch_id, max_envelopes=self.max_envelopes, max_bytes=self.max_bytes
        )


@dataclass(frozen=True, slots=True)
class MarkSent(WriteTask[None]):
    """The broker has the batch (PUBACK): ``queued → sent``."""

    envelope_ids: tuple[str, ...]
    at: datetime

    def run(self, conn: Connection) -> None:
        mark_sent(conn, self.envelope_ids, self.at)


@dataclass(frozen=True, slots=True)
class Requeue(WriteTask[int]):
    """Put unacknowledged envelopes back in the queue (every one when ``envelope_ids`` is None)."""

    envelope_ids: tuple[str, ...] | None = None

    def run(self, conn: Connection) -> int:
        return requeue(conn, self.envelope_ids)


@dataclass(frozen=True, slots=True)
class ApplyResults(WriteTask[int]):
    """Record central's outcomes (the first stands); returns how many changed."""

    results: tuple[EnvelopeResult, ...]
    now: datetime

    def run(self, conn: Connection) -> int:
        return apply_results(conn, self.results, self.now)


def claim_batch(
    conn: Connection, batch_id: str, *, max_envelopes: int, max_bytes: int
) -> list[Claimed]:
    """Reserve the next queued envelopes (oldest first, ``seq`` order per activity)."""
    rows = conn.execute(
        select(envelopes.c.envelope_id, envelopes.c.activity_id, envelopes.c.body, envelopes.c.size)
        .where(and_(envelopes.c.state == QUEUED, envelopes.c.batch_id.is_(None)))
        .order_by(envelopes.c.received_at, envelopes.c.activity_id, envelopes.c.seq)
        .limit(max_envelopes)
    ).all()
    picked: list[Claimed] = []
    total = 0
    for row in rows:
        if picked and total + row.size > max_bytes:
            break
        total += row.size
        picked.append(Claimed(row.envelope_id, row.activity_id, row.body))
    if picked:
        conn.execute(
            update(envelopes)
            .where(envelopes.c.envelope_id.in_([c.envelope_id for c in picked]))
            .values(batch_id=batch_id, attempts=envelopes.c.attempts + 1)
        )
    return picked


def mark_sent(conn: Connection, envelope_ids: Iterable[str], at: datetime) -> None:
    """The broker has the batch (PUBACK): ``queued → sent``."""
    conn.execute(
        update(envelopes)
        .where(and_(envelopes.c.envelope_id.in_(list(envelope_ids)), envelopes.c.state == QUEUED))
        .values(state=SENT, sent_at=at)
    )


def requeue(conn: Connection, envelope_ids: Iterable[str] | None = None) -> int:
    """Put unacknowledged envelopes back in the queue (all of them when ``None``)."""
    stmt = update(envelopes).where(envelopes.c.state.in_((QUEUED, SENT)))
    if envelope_ids is not None:
        stmt = stmt.where(envelopes.c.envelope_id.in_(list(envelope_ids)))
    else:
        stmt = stmt.where((envelopes.c.state == SENT) | envelopes.c.batch_id.is_not(None))
    return conn.execute(stmt.values(state=QUEUED, batch_id=None)).rowcount


def apply_results(conn: Connection, results: Iterable[EnvelopeResult], now: datetime) -> int:
    """Record central's outcomes; the first outcome stands. Returns how many changed."""
    results = list(results)
    rows = [
        {
            "eid": str(r.envelope_id),
            "state": APPLIED if r.outcome == "applied" else REJECTED,
            "code": r.code,
            "reason": r.reason,
            "result_at": r.applied_at,
        }
        for r in results
    ]
    changed = 0
    if rows:
        # One executemany for the whole result message, not a statement per row.
        outcome = conn.execute(
            update(envelopes)
            .where(
                and_(
                    envelopes.c.envelope_id == bindparam("eid"),
                    envelopes.c.state != APPLIED,  # no IN (...): executemany can't expand it
                    envelopes.c.state != REJECTED,
                )
            )
            .values(
                state=bindparam("state"),
                code=bindparam("code"),
                reason=bindparam("reason"),
                result_at=bindparam("result_at"),
                batch_id=None,
            ),
            rows,
        )
        changed = max(outcome.rowcount, 0)
    for result in results:
        if result.checked_in:
            check_in_activity(conn, result.activity_id, result.applied_at, str(result.envelope_id))
    set_meta(conn, META_LAST_SYNC, now.isoformat())
    return changed
