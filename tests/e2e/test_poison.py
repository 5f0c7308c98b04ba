"""A gateway's disk holding envelopes no database takes: the uplink drains anyway.

An older gateway accepted from devices values the wire contract now refuses
(integers past 32 bits, a time before year 1 in UTC, NUL in a field name,
text past its bound). Here a real gateway's store is given such envelopes on
disk, as that older gateway left them, between good ones; its real uplink
sends them through a real Mosquitto to a real bridge process (SQLite and
PostgreSQL). The good ones apply, each bad one comes back rejected with a
code and a reason the crew sees, the outbox empties, and a corrected
envelope after a rejected one applies.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app import running_gateway
from tests.e2e.conftest import GW, BridgeProcess, Central, Device, gateway_config, wait_for
from tests.support.broker import Broker

# What an older gateway stored, as changes to a completed envelope's body.
OLD_GATEWAY_VALUES: dict[str, dict[str, Any]] = {
    "base_version_2_31": {"base_version": 2**31},
    "created_at_year_0_utc": {"created_at": "0001-01-01T00:30:00+01:00"},
    "nul_in_a_field_name": {"record": {"site_ok": True, "no\x00tes": "x"}},
    "text_past_its_bound": {"record": {"site_ok": True, "notes": "x" * 200_000}},
    "integer_past_64_bits": {"tables": {"readings": [{"meter": "A", "value": 2**70}]}},
}


@pytest.fixture
def central(tmp_path: Path, broker: Broker, central_db_url: str) -> Iterator[BridgeProcess]:
    b = BridgeProcess(tmp_path / "central", broker, central_db_url)
    b.start()
    yield b
    b.stop()


async def _signed_in(http: aiohttp.ClientSession, url: str) -> Device:
    device = Device(http, url)
    await wait_for(device.sign_in, 30, "the user push to reach the gateway")
    return device


async def _final(device: Device, ids: set[str]) -> dict[str, dict[str, Any]] | None:
    rows = {e["envelope_id"]: e for e in await device.envelopes() if e["envelope_id"] in ids}
    if len(rows) == len(ids) and all(r["state"] in ("applied", "rejected") for r in rows.values()):
        return rows
    return None


def _as_an_old_gateway_stored_it(db: Path, envelope_id: str, changes: dict[str, Any]) -> None:
    with sqlite3.connect(db) as conn:
        (body,) = conn.execute(
            "SELECT body FROM envelopes WHERE envelope_id = ?", (envelope_id,)
        ).fetchone()
        doc = json.loads(body)
        doc.update(changes)
        text = json.dumps(doc)
        conn.execute(
            "UPDATE envelopes SET body = ?, size = ? WHERE envelope_id = ?",
            (text, len(text.encode()), envelope_id),
        )


async def test_an_old_gateways_poison_envelopes_are_rejected_and_the_uplink_drains(
    tmp_path: Path, broker: Broker, central: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    admin = Central(http, central.url)
    await admin.setup_crew()
    names = ["good_first", *OLD_GATEWAY_VALUES, "good_last"]
    acts = {name: await admin.new_activity(title=name) for name in names}
    config = gateway_config(tmp_path, broker)
    async with running_gateway(config) as gw:
        for act in acts.values():
            await admin.dispatch(act["id"])
        device = await _signed_in(http, gw.url)
        listed = await wait_for(
            lambda: _listed(device, len(acts)), 30, "the dispatches to reach the gateway"
        )
        by_id = {a["id"]: a for a in listed}
        broker.stop()  # the link is down while the crew works
        await wait_for(lambda: _link(device, "down"), 30, "the gateway to see the link drop")
        posted = {
            name: await device.post(by_id[act["id"]], 1, "completed", notes=name)
            for name, act in acts.items()
        }
    # The gateway is off: its disk now holds what an older gateway would have accepted.
    for name, changes in OLD_GATEWAY_VALUES.items():
        _as_an_old_gateway_stored_it(
            tmp_path / "gateway" / "gateway.db", posted[name]["envelope_id"], changes
        )
    broker.start()
    async with running_gateway(config) as gw:
        device = await _signed_in(http, gw.url)
        ids = {p["envelope_id"] for p in posted.values()}
        rows = await wait_for(lambda: _final(device, ids), 60, "every envelope to be answered")
        outcome = {name: rows[posted[name]["envelope_id"]] for name in names}
        assert outcome["good_first"]["state"] == outcome["good_last"]["state"] == "applied"
        for name in OLD_GATEWAY_VALUES:
            row = outcome[name]
            assert (row["state"], row["code"]) == ("rejected", "invalid_envelope"), (name, row)
            assert "wire contract" in row["reason"], row["reason"]
        # The outbox drained: nothing is waiting for central any more.
        status = await device.status()
        counts = status["envelopes"]
        assert not counts.get("queued") and not counts.get("sent"), counts
        assert status["oldest_pending_s"] is None, status
        # Central shows the same answer, and the fleet view names it.
        for name in OLD_GATEWAY_VALUES:
            seen = await admin.call("GET", f"/api/v1/envelopes/{posted[name]['envelope_id']}")
            assert (seen["outcome"], seen["code"]) == ("rejected", "invalid_envelope")
        fleet = await admin.call("GET", f"/api/v1/gateways/{GW}")
        assert "invalid_envelope" in fleet["last_error"]
        # The crew sends a corrected envelope after a rejected one, and it applies.
        fixed_activity = by_id[acts["base_version_2_31"]["id"]]
        fixed = await device.post(fixed_activity, 2, "completed", notes="corrected")
        await wait_for(lambda: _final(device, {fixed["envelope_id"]}), 30, "the correction")
        rows = await _final(device, {fixed["envelope_id"]})
        assert rows is not None and rows[fixed["envelope_id"]]["state"] == "applied"


async def _listed(device: Device, n: int) -> list[dict[str, Any]] | None:
    items = await device.activities()
    return items if len(items) >= n else None


async def _link(device: Device, state: str) -> bool:
    return bool((await device.status())["backhaul"]["link"] == state)
