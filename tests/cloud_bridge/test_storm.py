"""A reconnect storm: gateways back from an outage with backlogs, central over its queue bound.

Real gateway uplinks (their stores on disk) and a real bridge over a real
Mosquitto. Central's replay queue is kept small, so most batches are answered
``BatchDeferred``; the gateways hold off with jitter and come back. The
whole backlog is applied exactly once, long before any ack timeout (30 s)
would have made a gateway resend.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from cloud_bridge.config import ReplaySection
from cloud_bridge.models import LedgerEntry
from cloud_bridge.service import Bridge
from gateway.config import GatewayConfig
from gateway.store.activities import upsert_activity
from gateway.store.schema import envelopes
from gateway.store.store import Store, open_store
from gateway.store.submissions import body_hash, store_envelope
from gateway.uplink import Uplink
from outpost.forms import FormDefinition
from outpost.wire.schemas import ActivityWire, EnvelopeBody
from tests.cloud_bridge.conftest import FORM, SITES, Seeded, bridge_config
from tests.support.broker import Broker
from tests.support.store_tasks import SqlRead, SqlWrite

GATEWAYS = SITES[:6]
BACKLOG = 30  # envelopes per gateway, queued while the link was down


def gateway_config(gateway_id: str, broker: Broker, data_dir: Path) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "gateway": {"id": gateway_id, "data_dir": str(data_dir)},
            "mqtt": {
                "host": broker.host,
                "port": broker.port,
                "backoff_initial": 0.05,
                "backoff_max": 0.3,
                "batch_max_envelopes": 5,
                "inflight_batches": 4,
                "ack_timeout_s": 30,
                "adaptive": False,
            },
        }
    )


async def backlog(store: Store, activity_id: str) -> None:
    now = datetime.now(UTC)
    wire = ActivityWire(
        id=activity_id,
        title="Fence",
        type="inspection",
        form=FormDefinition.model_validate(FORM),
        form_version=1,
        responsible="ana",
        version=1,
    )
    await store.async_write(SqlWrite(lambda c: upsert_activity(c, wire, "ana", now)))
    for seq in range(1, BACKLOG + 1):
        body = EnvelopeBody(
            envelope_id=uuid.uuid4(),
            activity_id=activity_id,
            seq=seq,
            base_version=1,
            # Drafts wait on the gateway until their activity is completed (rule 4).
            status="completed" if seq == BACKLOG else "draft",
            created_at=now,
            record={"site_ok": True, "notes": f"seq {seq}"},
        )
        await store.async_write(
            SqlWrite(lambda c, b=body: store_envelope(c, b, body_hash(b), "ana", now))  # type: ignore[misc]
        )


async def applied(store: Store) -> int:
    def count(c: object) -> int:
        return int(
            c.execute(  # type: ignore[attr-defined]
                select(func.count()).where(envelopes.c.state == "applied")
            ).scalar_one()
        )

    return await store.async_read(SqlRead(count))


async def test_a_fleet_back_from_an_outage_drains_through_busy_answers(
    central_db_url: str, tmp_path: Path, broker: Broker
) -> None:
    config = bridge_config(central_db_url, tmp_path / "central", broker.port)
    replay = ReplaySection(queue_max_envelopes=10, retry_after_s=0.5, group_wait_ms=20)
    bridge = Bridge(config.model_copy(update={"replay": replay}))
    await bridge.async_start()
    stores: list[Store] = []
    uplinks: list[Uplink] = []
    try:
        await bridge.async_wait_mqtt(10)
        assert bridge.db is not None
        seed = Seeded(bridge.db)
        for gw in GATEWAYS:
            await asyncio.to_thread(seed.ready, gw, f"act-{gw}")
            store = await asyncio.to_thread(open_store, tmp_path / gw)
            stores.append(store)
            await backlog(store, f"act-{gw}")
        loop = asyncio.get_running_loop()
        started = loop.time()
        uplinks = [
            Uplink(gateway_config(gw, broker, tmp_path / gw), store)
            for gw, store in zip(GATEWAYS, stores, strict=True)
        ]
        await asyncio.gather(*(u.async_start() for u in uplinks))  # all at once
        async with asyncio.timeout(60):
            while True:
                counts = [await applied(s) for s in stores]
                if all(n == BACKLOG for n in counts):
                    break
                await asyncio.sleep(0.1)
        took = loop.time() - started
        assert took < 30, took  # no gateway waited out its ack timeout
        db = bridge.db

        def ledger() -> dict[str, int]:
            with db.session() as s:
                rows = s.execute(
                    select(LedgerEntry.outcome, func.count()).group_by(LedgerEntry.outcome)
                )
                return {outcome: n for outcome, n in rows}

        assert await asyncio.to_thread(ledger) == {"applied": BACKLOG * len(GATEWAYS)}
        assert bridge.metrics.replay_busy._value.get() > 0  # central did shed load
    finally:
        for u in uplinks:
            await u.async_stop()
        for s in stores:
            await s.async_close()
        await bridge.async_stop()
