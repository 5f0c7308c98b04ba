"""Issue 4's promises, end to end with real processes and a real broker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import create_engine, func, select, text

from cloud_bridge.models import LedgerEntry
from gateway.app import running_gateway
from tests.e2e.conftest import (
    BridgeProcess,
    Central,
    Device,
    gateway_config,
    soak_scale,
    wait_for,
)
from tests.support.broker import Broker


async def signed_in_device(http: aiohttp.ClientSession, url: str) -> Device:
    device = Device(http, url)
    # the crew's credentials reach the gateway from central over MQTT
    await wait_for(device.sign_in, 20, "the user push to reach the gateway")
    return device


async def states(device: Device) -> dict[str, str]:
    return {e["envelope_id"]: e["state"] for e in await device.envelopes()}


async def test_crew_day_with_a_backhaul_cut(
    tmp_path: Path, broker: Broker, bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    central = Central(http, bridge.url)
    await central.setup_crew()
    a1 = await central.new_activity(title="North fence")
    a2 = await central.new_activity(title="Transformer T2")
    async with running_gateway(gateway_config(tmp_path, broker)) as gw:
        for act in (a1, a2):
            await central.dispatch(act["id"])
        device = await signed_in_device(http, gw.url)
        listed = await wait_for(
            lambda: _listed(device, 2), 20, "the dispatches to reach the gateway"
        )
        by_id = {a["id"]: a for a in listed}
        first = [await device.post(by_id[a1["id"]], 1, notes="gate rusted")]
        first.append(await device.post(by_id[a1["id"]], 2, "completed", notes="gate replaced"))
        await wait_for(lambda: _all_in(device, first, "applied"), 20, "the first activity to apply")

        # central applied it: the record is the last envelope's, the activity is back online
        record = await central.call("GET", f"/api/v1/activities/{a1['id']}/record")
        assert "gate replaced" in str(record)
        online = await central.call("GET", "/api/v1/activities?state=online")
        online_ids = {
            a["id"] for a in (online["activities"] if isinstance(online, dict) else online)
        }
        assert a1["id"] in online_ids and a2["id"] not in online_ids

        broker.stop()
        await wait_for(lambda: _link(device, "down"), 20, "the gateway to see the link drop")
        dark = [
            await device.post(by_id[a2["id"]], 1),
            await device.post(by_id[a2["id"]], 2, "completed"),
        ]
        assert {(await states(device))[e["envelope_id"]] for e in dark} == {"queued"}
        broker.start()
        await wait_for(lambda: _all_in(device, dark, "applied"), 30, "the dark-time work to apply")
        status = await device.status()
        assert status["backhaul"]["link"] == "up"
        assert status["backhaul"]["last_sync"] is not None
        # the checked-in activities have left the gateway's offline list
        await wait_for(lambda: _listed_exactly(device, 0), 10, "the offline list to empty")


async def _listed(device: Device, n: int) -> list[dict[str, Any]] | None:
    items = await device.activities()
    return items if len(items) >= n else None


async def _listed_exactly(device: Device, n: int) -> bool:
    items = [a for a in await device.activities() if a.get("state", "offline") == "offline"]
    return len(items) == n


async def _all_in(device: Device, sent: list[dict[str, Any]], state: str) -> bool:
    current = await states(device)
    return all(current.get(e["envelope_id"]) == state for e in sent)


async def _link(device: Device, state: str) -> bool:
    return bool((await device.status())["backhaul"]["link"] == state)


async def test_dispatch_while_the_gateway_is_dark_arrives_on_reconnect(
    tmp_path: Path, broker: Broker, bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    central = Central(http, bridge.url)
    await central.setup_crew()
    config = gateway_config(tmp_path, broker)
    async with running_gateway(config) as gw:
        await signed_in_device(http, gw.url)  # the gateway is known to central
    act = await central.new_activity(title="Battery room")
    await central.dispatch(act["id"])  # queued on the broker for the gateway's session
    async with running_gateway(config) as gw:
        device = await signed_in_device(http, gw.url)
        listed = await wait_for(lambda: _listed(device, 1), 20, "the queued dispatch")
        assert listed[0]["id"] == act["id"]


async def test_a_rejection_reaches_the_gateway_api(
    tmp_path: Path, broker: Broker, bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    central = Central(http, bridge.url)
    await central.setup_crew()
    act = await central.new_activity()
    async with running_gateway(gateway_config(tmp_path, broker)) as gw:
        await central.dispatch(act["id"])
        device = await signed_in_device(http, gw.url)
        (listed,) = await wait_for(lambda: _listed(device, 1), 20, "the dispatch")
        stale = dict(
            listed, version=listed["version"] + 5
        )  # edited from a version central never had
        bad = await device.post(stale, 1, "completed")
        await wait_for(lambda: _all_in(device, [bad], "rejected"), 20, "the rejection")
        (row,) = [e for e in await device.envelopes() if e["envelope_id"] == bad["envelope_id"]]
        assert row["code"] == "conflict"
        assert row["reason"]
        status = await device.status()
        assert any(r["envelope_id"] == bad["envelope_id"] for r in status["rejected"])
        # the crew sends a corrected envelope after it, and it applies
        good = await device.post(listed, 2, "completed")
        await wait_for(lambda: _all_in(device, [good], "applied"), 20, "the corrected envelope")


async def test_checkout_through_the_gateway(
    tmp_path: Path, broker: Broker, bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    central = Central(http, bridge.url)
    await central.setup_crew()
    act = await central.new_activity()
    async with running_gateway(gateway_config(tmp_path, broker)) as gw:
        device = await signed_in_device(http, gw.url)
        await wait_for(lambda: _link(device, "up"), 10, "the link")
        code, data = await device.call("POST", f"/api/v1/activities/{act['id']}/checkout")
        assert code == 200, data
        assert [a["id"] for a in await device.activities()] == [act["id"]]
        offline = await central.call("GET", "/api/v1/activities?state=offline")
        assert act["id"] in str(offline)

        other = await central.new_activity(title="Another")
        broker.stop()
        await wait_for(lambda: _link(device, "down"), 20, "the link to drop")
        started = time.monotonic()
        code, data = await device.call("POST", f"/api/v1/activities/{other['id']}/checkout")
        assert code == 503, data
        assert data["error"]["code"] == "backhaul_down"
        # at once, not after the 10 s checkout timeout (room for a loaded machine's stall)
        assert time.monotonic() - started < 2


@pytest.mark.soak
async def test_exactly_once_through_broker_restarts_and_a_bridge_kill(
    tmp_path: Path, broker: Broker, bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    """1,000 envelopes over 20 activities (scaled by OUTPOST_SOAK_SCALE)."""
    per_activity = max(5, int(50 * soak_scale()))
    central = Central(http, bridge.url)
    await central.setup_crew()
    acts = [await central.new_activity(title=f"Soak {i}") for i in range(20)]
    # small batches and a narrow window so the faults land mid-drain
    config = gateway_config(
        tmp_path, broker, batch_max_envelopes=10, inflight_batches=2, ack_timeout_s=5
    )
    async with running_gateway(config) as gw:
        for act in acts:
            await central.dispatch(act["id"])
        device = await signed_in_device(http, gw.url)
        listed = {a["id"]: a for a in await wait_for(lambda: _listed(device, 20), 30, "dispatches")}
        sent: list[dict[str, Any]] = []
        broker.stop()  # hold everything on the gateway until all is written
        await wait_for(lambda: _link(device, "down"), 20, "the link to drop")
        for act in acts:
            for seq in range(1, per_activity + 1):
                status = "completed" if seq == per_activity else "draft"
                sent.append(await device.post(listed[act["id"]], seq, status, notes=f"n{seq}"))
        total = len(sent)
        broker.start()

        async def applied() -> int:
            return sum(1 for s in (await states(device)).values() if s == "applied")

        await wait_for(lambda: _at_least(applied, total // 5), 60, "the drain to start")
        faults_at = [await applied()]
        broker.restart()
        await wait_for(
            lambda: _at_least(applied, total * 2 // 5), 60, "the drain after a broker restart"
        )
        bridge.kill()
        await asyncio.sleep(0.5)
        bridge.start()
        await wait_for(
            lambda: _at_least(applied, total * 3 // 5), 60, "the drain after the bridge kill"
        )
        broker.restart()
        await wait_for(lambda: _at_least(applied, total), 120, "every envelope to apply")
        # each fault hit while envelopes were still waiting: the test proves something
        assert all(n < total for n in faults_at), faults_at

    engine = create_engine(f"sqlite:///{tmp_path / 'central' / 'central.db'}")
    with engine.connect() as conn:
        ids = [e["envelope_id"] for e in sent]
        rows = conn.execute(select(LedgerEntry.envelope_id, LedgerEntry.outcome)).all()
        assert len(rows) == total, "every envelope has exactly one ledger row"
        assert {str(r.envelope_id) for r in rows} == set(ids)
        assert {r.outcome for r in rows} == {"applied"}
        assert (
            conn.execute(select(func.count(func.distinct(LedgerEntry.envelope_id)))).scalar()
            == total
        )
        # every activity was checked in exactly once: version bumped by one
        versions = dict(conn.execute(text("SELECT id, version FROM activities")).all())
    engine.dispose()
    for act in acts:
        assert versions[act["id"]] == act["version"] + 1
    record = await central.call("GET", f"/api/v1/activities/{acts[0]['id']}/record")
    assert f"n{per_activity}" in str(record)


async def _at_least(counter: Any, n: int) -> bool:
    return bool(await counter() >= n)


async def test_lan_service_never_stalls_while_the_link_flaps(
    tmp_path: Path, broker: Broker, bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    central = Central(http, bridge.url)
    await central.setup_crew()
    act = await central.new_activity()
    async with running_gateway(gateway_config(tmp_path, broker)) as gw:
        await central.dispatch(act["id"])
        device = await signed_in_device(http, gw.url)
        (listed,) = await wait_for(lambda: _listed(device, 1), 20, "the dispatch")
        worst = 0.0
        seq = 0
        for _flap in range(3):
            broker.stop()
            for _ in range(5):
                seq += 1
                started = time.monotonic()
                await device.post(listed, seq)
                await device.status()
                worst = max(worst, time.monotonic() - started)
            broker.start()
            await wait_for(lambda: _link(device, "up"), 20, "the link to return")
        assert worst < 0.5, f"a LAN request took {worst:.3f}s while the link flapped"
        done = await device.post(listed, seq + 1, "completed")
        await wait_for(lambda: _all_in(device, [done], "applied"), 20, "the drain after flapping")


async def test_a_user_central_stops_from_working_offline_is_signed_out_at_once(
    tmp_path: Path, broker: Broker, bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    central = Central(http, bridge.url)
    await central.setup_crew()
    async with running_gateway(gateway_config(tmp_path, broker)) as gw:
        device = await signed_in_device(http, gw.url)
        assert (await device.call("GET", "/api/v1/activities"))[0] == 200
        await central.call(
            "PUT", "/api/v1/users/ana", {"password": "field crew password", "offline": False}
        )

        async def refused() -> bool:
            return (await device.call("GET", "/api/v1/activities"))[0] == 401

        await wait_for(refused, 10, "the revoked user's session to end")
        assert not await device.sign_in()


async def test_a_dispatch_made_before_the_gateway_ever_connected_arrives(
    tmp_path: Path, broker: Broker, bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    """No broker session existed to queue it: central sends holdings again on connect."""
    central = Central(http, bridge.url)
    await central.setup_crew()
    act = await central.new_activity(title="Before first boot")
    await central.dispatch(act["id"])  # the gateway is still in its box
    async with running_gateway(gateway_config(tmp_path, broker)) as gw:
        device = await signed_in_device(http, gw.url)
        (listed,) = await wait_for(lambda: _listed(device, 1), 20, "the dispatch")
        assert listed["id"] == act["id"]
        done = await device.post(listed, 1, "completed")
        await wait_for(lambda: _all_in(device, [done], "applied"), 20, "the envelope to apply")
