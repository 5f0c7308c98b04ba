"""Nothing acknowledged is lost: the bridge away, the broker restarted."""

from __future__ import annotations

from pathlib import Path

from cloud_bridge.service import Bridge
from outpost.wire import topics
from tests.cloud_bridge.conftest import Admin, FakeGateway, bridge_config, envelope
from tests.support.broker import Broker


async def test_uplink_sent_while_bridge_is_down_is_applied_on_return(
    central_db_url: str, tmp_path: Path, broker: Broker, admin: Admin, bridge: Bridge
) -> None:
    gw = await FakeGateway("site-a", broker.port).start()
    try:
        aid = await admin.seed()
        await admin.ok("POST", f"/api/v1/activities/{aid}/dispatch", {"gateway_id": "site-a"})
        await gw.expect(topics.DOWN_DISPATCH)
        await bridge.async_stop()  # the bridge goes away; its session stays at the broker
        e1, e2 = envelope(aid, 1), envelope(aid, 2, status="completed")
        await gw.publish(topics.UP_ENVELOPES, gw.batch([e1, e2]))
        # The broker also restarts while the bridge is away.
        broker.restart()
        await gw.client.async_wait_connected(10)
        again = Bridge(bridge_config(central_db_url, tmp_path / "central", broker.port))
        await again.async_start()
        try:
            results = await gw.results(2, timeout=20)
            assert {r.outcome for r in results.values()} == {"applied"}
        finally:
            await again.async_stop()
    finally:
        await gw.stop()


async def test_broker_restart_before_bridge_reconnects(
    central_db_url: str, tmp_path: Path, broker: Broker
) -> None:
    """Uplink published after a broker restart, before the bridge is back, still applies."""
    import aiohttp

    b = Bridge(bridge_config(central_db_url, tmp_path / "central", broker.port))
    await b.async_start()
    gw = await FakeGateway("site-a", broker.port).start()
    try:
        await b.async_wait_mqtt(10)
        async with aiohttp.ClientSession() as session:
            admin = Admin(b.admin_url, session)
            aid = await admin.seed()
            await admin.ok("POST", f"/api/v1/activities/{aid}/dispatch", {"gateway_id": "site-a"})
            await gw.expect(topics.DOWN_DISPATCH)
            assert b.mqtt is not None
            broker.stop()
            await b.mqtt.client.async_wait_disconnected(10)
            # Hold the bridge back: the gateway reconnects and publishes first.
            await b.mqtt.async_stop()
            broker.start()
            await gw.client.async_wait_connected(10)
            e1 = envelope(aid, 1)
            await gw.publish(topics.UP_ENVELOPES, gw.batch([e1]))
            await b.mqtt.async_start()
            (res,) = (await gw.results(1, timeout=20)).values()
            assert res.outcome == "applied"
    finally:
        await gw.stop()
        await b.async_stop()
