"""A fleet of a few hundred simulated gateways against one bridge on PostgreSQL (bounded soak).

The bounded form of ``bench/fleet_scale.py``: ``300 * OUTPOST_SOAK_SCALE``
gateways (60 at the CI scale 0.2), each a real MQTT 5 session, send
heartbeats and small batches for a few seconds, then all at once a backlog
(an outage ending). Nothing is lost (every envelope sent is in central's
ledger, applied), nothing is applied twice (the ledger holds each envelope
once and each activity's record is its last envelope's), and every batch
is answered.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from cloud_bridge.db import Database
from cloud_bridge.models import LedgerEntry, Record
from cloud_bridge.service import Bridge
from tests.cloud_bridge.conftest import bridge_config
from tests.support.broker import Broker
from tests.support.fleet_sim import SimGateway, Stats, seed
from tests.support.postgres import fresh_database

pytestmark = pytest.mark.soak
SCALE = float(os.environ.get("OUTPOST_SOAK_SCALE", "1"))
GATEWAYS = max(20, int(300 * SCALE))


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


async def test_a_few_hundred_gateways_nothing_lost_nothing_twice(
    pg_url: str, tmp_path: Path, broker: Broker
) -> None:
    ids = [f"sim-{i:05d}" for i in range(GATEWAYS)]
    await asyncio.to_thread(seed, pg_url, ids)
    b = Bridge(bridge_config(pg_url, tmp_path / "central", broker.port))
    await b.async_start()
    stats = Stats()
    sims = [SimGateway(g, broker.port, stats, ack_timeout_s=20) for g in ids]
    try:
        await b.async_wait_mqtt(10)
        for i in range(0, len(sims), 50):
            await asyncio.gather(*(s.start() for s in sims[i : i + 50]))
        # steady: a heartbeat every 2 s, a batch of 2 every second, for 4 s
        stop_at = time.monotonic() + 4
        await asyncio.gather(*(s.run_steady(stop_at, heartbeat_s=2, batch_s=1) for s in sims))
        # an outage ends: each sends a backlog of 10 in batches of 5, all at once
        async with asyncio.timeout(240):
            await asyncio.gather(*(s.run_backlog(10, 5) for s in sims))
        assert not any(s.pending for s in sims), "every batch answered"
    finally:
        await asyncio.gather(*(s.stop() for s in sims), return_exceptions=True)
        await b.async_stop()

    assert stats.rejected == []
    assert stats.answered_envelopes == stats.sent_envelopes
    assert len(stats.sent_envelopes) >= GATEWAYS * 12
    db = Database.from_url(pg_url)
    try:
        with db.session() as s:
            ledger = s.execute(select(LedgerEntry.envelope_id, LedgerEntry.outcome)).all()
            seqs = dict(s.execute(select(Record.activity_id, Record.seq)).all())
    finally:
        db.dispose()
    assert len(ledger) == len({e for e, _ in ledger}) == len(stats.sent_envelopes)
    assert {e for e, _ in ledger} == stats.sent_envelopes
    assert {o for _, o in ledger} == {"applied"}
    assert seqs == {s.aid: s.seq for s in sims}  # each record is its activity's last envelope
