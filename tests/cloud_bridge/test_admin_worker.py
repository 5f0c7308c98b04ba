"""An admin worker (`[mqtt] uplink = false`): serves the admin API and sends downlink, takes no uplink."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from cloud_bridge.service import Bridge
from outpost.wire import topics
from outpost.wire.schemas import Dispatch
from tests.cloud_bridge.conftest import Admin, FakeGateway, bridge_config, envelope
from tests.support.broker import Broker


async def test_admin_worker_dispatches_and_leaves_the_uplink_to_the_others(
    bridge: Bridge, central_db_url: str, tmp_path: Path, broker: Broker
) -> None:
    # No client id set: the admin worker must not take the uplink worker's (the broker
    # would disconnect one for the other, over and over).
    admin_worker = Bridge(
        bridge_config(central_db_url, tmp_path / "admin-worker", broker.port, uplink=False)
    )
    await admin_worker.async_start()
    gw = FakeGateway("site-a", broker.port)
    try:
        await admin_worker.async_wait_mqtt(10)
        await gw.start()
        async with aiohttp.ClientSession() as session:
            admin = Admin(admin_worker.admin_url, session)
            aid = await admin.seed()
            await admin.ok("POST", f"/api/v1/activities/{aid}/dispatch", {"gateway_id": "site-a"})
            dispatch = await gw.expect("down/dispatch")
            assert isinstance(dispatch, Dispatch) and dispatch.activity.id == aid

            e1 = envelope(aid, 1, base_version=dispatch.activity.version)
            for _ in range(3):
                await gw.publish(topics.UP_ENVELOPES, gw.batch([e1]))
                results = await gw.results(1)
                assert results[e1.envelope_id].outcome == "applied"
            env = await admin.ok("GET", f"/api/v1/envelopes/{e1.envelope_id}")
            assert env["outcome"] == "applied"
        assert bridge.metrics.batches._value.get() == 3  # the uplink worker took them all
        assert admin_worker.metrics.batches._value.get() == 0
        assert admin_worker.handler is not None and admin_worker.handler.dropped == 0
        assert admin_worker.mqtt is not None and bridge.mqtt is not None
        assert "-admin-" in admin_worker.mqtt.client_id
        assert admin_worker.mqtt.client.connect_count == 1 and bridge.mqtt.client.connect_count == 1
    finally:
        await gw.stop()
        await admin_worker.async_stop()
