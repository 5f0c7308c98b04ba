"""Several bridge workers on one PostgreSQL, sharing the uplink (MQTT 5 shared subscription).

Real processes (``outpost-bridge run``) against a real Mosquitto: one worker
is SIGKILLed while batches are in flight and the broker restarts (Mosquitto
2.0 forgets shared subscriptions across a restart; the workers subscribe
again on every connect). Gateways resend what goes unanswered, as real ones
do; every envelope is applied exactly once and every batch answered.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cloud_bridge import rules
from cloud_bridge.db import Database
from cloud_bridge.migration import migrate
from cloud_bridge.models import LedgerEntry
from outpost.mqtt import NotConnected, PublishFailed
from outpost.wire import topics
from outpost.wire.schemas import BatchDeferred, EnvelopeResults
from tests.cloud_bridge.conftest import SITES, FakeGateway, Seeded, envelope
from tests.support.bridge_process import BridgeProcess
from tests.support.broker import Broker
from tests.support.postgres import fresh_database

pytestmark = pytest.mark.postgres

GATEWAYS = SITES[:6]
ACTIVITIES = 3  # per gateway
BATCHES = 12  # per gateway, one envelope per activity each
ANSWER_TIMEOUT = 3.0  # the simulated gateways' ack timeout


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


async def send_until_answered(gw: FakeGateway, batch: object, want: set[uuid.UUID]) -> int:
    """Publish, and publish again after each silent ANSWER_TIMEOUT; returns the resends."""
    resends = -1
    while want:
        resends += 1
        try:
            await gw.publish(topics.UP_ENVELOPES, batch)
        except (NotConnected, PublishFailed):
            await asyncio.sleep(0.2)  # the broker is away: the batch waits, as on a gateway
            continue
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT):
                while want:
                    leaf, message, _ = await gw.inbox.get()
                    if leaf != topics.DOWN_RESULTS:
                        continue
                    if isinstance(message, BatchDeferred):
                        await asyncio.sleep(0.5)
                        break
                    assert isinstance(message, EnvelopeResults)
                    for r in message.results:
                        assert r.outcome == "applied", r
                        want.discard(r.envelope_id)
        except TimeoutError:
            pass
    return resends


async def test_two_workers_share_the_uplink_through_a_kill_and_a_broker_restart(
    pg_url: str, tmp_path: Path, broker: Broker
) -> None:
    db = Database.from_url(pg_url)
    try:
        migrate(db.engine)
        seed = Seeded(db)
        acts = {gw: [seed.ready(gw, f"{gw}-a{i}") for i in range(ACTIVITIES)] for gw in GATEWAYS}
        workers = [
            BridgeProcess(
                tmp_path / f"worker-{i}",
                broker,
                pg_url,
                mqtt={"shared": True, "client_id": f"bridge-worker-{i}"},
            )
            for i in range(2)
        ]
        for w in workers:
            await asyncio.to_thread(w.start)
        gws = [await FakeGateway(gw, broker.port).start() for gw in GATEWAYS]
        sent = asyncio.Event()
        progress = {gw.gateway_id: 0 for gw in gws}

        async def gateway(gw: FakeGateway) -> int:
            resends = 0
            for seq in range(1, BATCHES + 1):
                batch = gw.batch([envelope(a, seq) for a in acts[gw.gateway_id]])
                want = {e.envelope_id for e in batch.envelopes}
                resends += await send_until_answered(gw, batch, want)
                progress[gw.gateway_id] = seq
                if min(progress.values()) >= 3:
                    sent.set()
            return resends

        async def chaos() -> None:
            await sent.wait()
            await asyncio.to_thread(workers[1].kill)  # mid-drain: batches in flight
            await asyncio.sleep(0.5)
            await asyncio.to_thread(broker.restart)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(workers[1].start)

        try:
            async with asyncio.timeout(150):
                *resends, _ = await asyncio.gather(*(gateway(g) for g in gws), chaos())
        finally:
            for g in gws:
                await g.stop()
            for w in workers:
                await asyncio.to_thread(w.stop)
        assert all(p == BATCHES for p in progress.values())
        with db.session() as s:
            total = len(GATEWAYS) * ACTIVITIES * BATCHES
            assert s.scalar(select(func.count()).select_from(LedgerEntry)) == total
            outcomes = s.execute(
                select(LedgerEntry.outcome, func.count()).group_by(LedgerEntry.outcome)
            ).all()
            assert dict(outcomes) == {"applied": total}
            for gw in GATEWAYS:
                for aid in acts[gw]:
                    assert rules.get_activity(s, aid).last_seq == BATCHES
        # Both workers applied batches (the load was shared).
        for w in workers:
            assert "replayed " in w.log_text(), w.log_text()[-2000:]
        print("resends per gateway:", resends)
    finally:
        db.dispose()
