"""Sent back with a note: central's review reaches the crew, and the second round applies."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import aiohttp

from gateway.app import running_gateway
from tests.e2e.conftest import BridgeProcess, Central, Device, gateway_config, wait_for
from tests.e2e.test_chain import _all_in, _listed, _listed_exactly, signed_in_device
from tests.support.broker import Broker


async def _sent_back(device: Device) -> dict[str, Any] | None:
    for a in await device.activities():
        if a.get("review"):
            return a
    return None


async def test_has_issues_goes_back_to_the_crew_and_the_correction_applies(
    tmp_path: Path, broker: Broker, bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    central = Central(http, bridge.url)
    await central.setup_crew()
    act = await central.new_activity(title="North fence")
    config = gateway_config(tmp_path, broker)
    async with running_gateway(config) as gw:
        await central.dispatch(act["id"])
        device = await signed_in_device(http, gw.url)
        (listed,) = await wait_for(lambda: _listed(device, 1), 20, "the dispatch")
        first = [
            await device.post(listed, 1, notes="gate rusted"),
            await device.post(listed, 2, "completed", notes="gate fine"),
        ]
        await wait_for(lambda: _all_in(device, first, "applied"), 20, "the first round")
        await wait_for(lambda: _listed_exactly(device, 0), 10, "the check-in")

        note = "The gate is not fine: the photo shows rust. Describe the repair."
        out = await central.call(
            "POST", f"/api/v1/activities/{act['id']}/review", {"state": "has_issues", "note": note}
        )
        assert out["sent_to_gateway"] == config.gateway.id

        back = await wait_for(lambda: _sent_back(device), 20, "the activity to come back")
        assert back["review"]["note"] == note and back["review"]["round"] == 2
        assert back["status"] == "in_progress" and not back["read_only"]
        assert back["next_seq"] == 3
        assert back["version"] == listed["version"] + 1
        code, detail = await device.call("GET", f"/api/v1/activities/{act['id']}")
        assert code == 200 and detail["review"]["note"] == note
        # The last round's answers are there to correct.
        assert detail["latest_envelope"]["record"]["notes"] == "gate fine"

        # A stale seq from the last round is refused by the gateway with the next one.
        code, data = await device.call(
            "POST", "/api/v1/envelopes", {**first[1], "envelope_id": str(uuid.uuid4())}
        )
        assert code == 409 and data["error"]["code"] == "seq_mismatch", data

        fixed = [await device.post(back, 3, "completed", notes="hinge replaced, rust treated")]
        await wait_for(lambda: _all_in(device, fixed, "applied"), 20, "the second round")
        await wait_for(lambda: _listed_exactly(device, 0), 10, "the second check-in")

    record = await central.call("GET", f"/api/v1/activities/{act['id']}/record")
    assert record["record"]["notes"] == "hinge replaced, rust treated"
    reviews = await central.call("GET", f"/api/v1/activities/{act['id']}/reviews")
    assert [len(r["envelopes"]) for r in reviews["rounds"]] == [2, 1]
    assert reviews["review_state"] == "awaiting_review"
