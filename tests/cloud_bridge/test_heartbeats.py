"""Heartbeats in group commits: many gateways' heartbeats, one transaction, each still right."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from cloud_bridge.db import Database
from cloud_bridge.dbrunner import DbRunner
from cloud_bridge.handler import record_heartbeat
from cloud_bridge.heartbeats import HeartbeatCommitter
from cloud_bridge.metrics import BridgeMetrics
from cloud_bridge.models import Gateway, GatewayHistory
from outpost.wire.schemas import Heartbeat

GATEWAYS = [f"site-{i:03d}" for i in range(60)]


def beat(gateway_id: str, devices: int = 2) -> Heartbeat:
    return Heartbeat(
        gateway_id=gateway_id,
        sent_at=datetime.now(UTC),
        version="0.3.0",
        uptime_s=60,
        counts={"queued": 1},
        rejected=0,
        disk_free_bytes=20 * 1024**3,
        db_bytes=10**6,
        devices=devices,
    )


@pytest.fixture
def runner(db: Database) -> Iterator[DbRunner]:
    r = DbRunner(db, 2, name="test-uplink")
    yield r
    r.shutdown()


class Counting:
    """record_heartbeat, noting each transaction it ran in (and failing for one gateway)."""

    def __init__(self, poison: str | None = None) -> None:
        self.sessions: set[int] = set()
        self.calls = 0
        self.poison = poison

    def __call__(self, session: Session, hb: Heartbeat, every: float, now: datetime) -> None:
        self.calls += 1
        self.sessions.add(id(session.connection()))
        if hb.gateway_id == self.poison:
            raise ValueError("this gateway's row cannot be written")
        record_heartbeat(session, hb, every, now)


async def test_many_gateways_share_a_transaction_and_each_row_is_right(
    runner: DbRunner, db: Database
) -> None:
    record = Counting()
    hbs = HeartbeatCommitter(runner, record, wait_s=0.05, history_every_s=300)
    arrived = datetime.now(UTC) - timedelta(seconds=2)
    # Two from each gateway, the second with other figures: the row keeps the later.
    firsts = [hbs.async_record(beat(g, 1), arrived) for g in GATEWAYS]
    seconds = [hbs.async_record(beat(g, 7), arrived + timedelta(seconds=1)) for g in GATEWAYS]
    assert all(await asyncio.gather(*firsts, *seconds))
    await hbs.async_stop()
    assert record.calls == 2 * len(GATEWAYS)
    assert len(record.sessions) < len(GATEWAYS) // 4, "heartbeats were not grouped"
    with db.session() as s:
        rows = {g.id: g for g in s.scalars(select(Gateway))}
        assert set(rows) == set(GATEWAYS)
        for g in rows.values():
            assert g.last_heartbeat is not None and g.last_heartbeat["devices"] == 7
            assert g.state == "online"
            # central's clock when the heartbeat came in, not when its group committed
            assert abs((g.heartbeat_at - (arrived + timedelta(seconds=1))).total_seconds()) < 0.01
        # history: one heartbeat per gateway (one in 5 min), plus its "online"
        kinds = s.execute(
            select(GatewayHistory.kind, func.count()).group_by(GatewayHistory.kind)
        ).all()
        assert dict(kinds) == {"heartbeat": len(GATEWAYS), "online": len(GATEWAYS)}


async def test_a_group_costs_a_few_statements_not_some_per_heartbeat(
    runner: DbRunner, db: Database
) -> None:
    """Known gateways' heartbeats: their rows are locked and loaded once, then written
    together (once each row was selected again and flushed alone: ~0.6 ms a heartbeat)."""
    hbs = HeartbeatCommitter(runner, record_heartbeat, wait_s=0.05, history_every_s=300)
    now = datetime.now(UTC)
    assert all(await asyncio.gather(*(hbs.async_record(beat(g), now) for g in GATEWAYS)))
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.split(None, 1)[0])

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        later = now + timedelta(seconds=30)
        assert all(await asyncio.gather(*(hbs.async_record(beat(g, 9), later) for g in GATEWAYS)))
        await hbs.async_stop()
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert 0 < len(statements) <= 6, statements  # a lock-and-load, an UPDATE (+ history)
    with db.session() as s:
        for g in s.scalars(select(Gateway)):
            assert g.last_heartbeat is not None and g.last_heartbeat["devices"] == 9
            assert abs((g.heartbeat_at - later).total_seconds()) < 0.01


async def test_a_failing_heartbeat_costs_only_itself(runner: DbRunner, db: Database) -> None:
    record = Counting(poison=GATEWAYS[3])
    hbs = HeartbeatCommitter(runner, record, wait_s=0.05)
    now = datetime.now(UTC)
    results = await asyncio.gather(
        *(hbs.async_record(beat(g), now) for g in GATEWAYS[:10]), return_exceptions=True
    )
    await hbs.async_stop()
    assert [isinstance(r, ValueError) for r in results] == [i == 3 for i in range(10)]
    with db.session() as s:
        assert set(s.scalars(select(Gateway.id))) == set(GATEWAYS[:10]) - {GATEWAYS[3]}


async def test_beyond_the_bound_a_heartbeat_is_dropped_as_qos_0_may_be(
    runner: DbRunner, db: Database
) -> None:
    metrics = BridgeMetrics()
    hbs = HeartbeatCommitter(runner, Counting(), wait_s=0.2, queue_max=5, metrics=metrics)
    now = datetime.now(UTC)
    kept = await asyncio.gather(*(hbs.async_record(beat(g), now) for g in GATEWAYS[:8]))
    await hbs.async_stop()
    assert kept == [True] * 5 + [False] * 3
    assert metrics.dropped.labels("heartbeat_overflow")._value.get() == 3
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Gateway)) == 5
