"""A form with logic end to end: real broker, bridge and gateway processes.

The crew's completed envelope that breaks a constraint is refused by the
gateway with the constraint's message and never leaves it; the corrected one
arrives centrally exactly as the crew entered it.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from gateway.app import running_gateway
from tests.e2e.conftest import (
    GW,
    PASSWORD,
    BridgeProcess,
    Central,
    Device,
    gateway_config,
    wait_for,
)
from tests.support.broker import Broker

CASES = json.loads(
    (Path(__file__).parents[1] / "data" / "form_logic_conformance.json").read_text("utf-8")
)
RECORD = {
    "site_ok": "no",
    "hazard": "loose cable by the gate",
    "has_power": "yes",
    "reading": 612,
    "checks": ["fence", "roof"],
    "roof_note": "two tiles cracked",
    "visit": "2026-11-30",
    "code": "NQ-104",
    "done": True,
    "total": "152.5",
    "rows_count": "2",
    "summary": "parts: 2, total 152.5",
}
ROWS = {
    "parts": [
        {"part": "hinge", "amount": 2.5, "line": "1", "why": None},
        {"part": "bolt", "amount": 150, "line": "2", "why": "a whole box"},
    ]
}


def _body(activity: dict[str, Any], seq: int, record: dict[str, Any]) -> dict[str, Any]:
    return {
        "envelope_id": str(uuid.uuid4()),
        "activity_id": activity["id"],
        "seq": seq,
        "base_version": activity["version"],
        "status": "completed",
        "created_at": datetime.now(UTC).isoformat(),
        "record": record,
        "tables": ROWS,
        "attachments": [],
    }


async def test_a_logic_form_arrives_centrally_as_entered_and_a_broken_one_never_leaves(
    tmp_path: Path, broker: Broker, bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    central = Central(http, bridge.url)
    await central.call(
        "POST",
        "/api/v1/activity-types",
        {"name": "inspection", "offline": True, "form": CASES["forms"]["inspection"]},
    )
    await central.call(
        "PUT", "/api/v1/users/ana", {"password": PASSWORD, "offline": True, "sites": [GW]}
    )
    act = await central.new_activity(title="North Quarry substation")
    async with running_gateway(gateway_config(tmp_path, broker)) as gw:
        await central.dispatch(act["id"])
        device = Device(http, gw.url)
        await wait_for(device.sign_in, 20, "the user push to reach the gateway")
        await wait_for(device.activities, 20, "the dispatch to reach the gateway")

        code, refused = await device.call("POST", "/api/v1/envelopes", _body(act, 1, RECORD))
        assert code == 422, refused
        assert "A reading is between 0 and 500." in refused["error"]["message"]

        fixed = {**RECORD, "reading": 230.5}
        code, stored = await device.call("POST", "/api/v1/envelopes", _body(act, 1, fixed))
        assert code == 201, stored

        async def applied() -> Any:
            rec = await central.call("GET", f"/api/v1/activities/{act['id']}/record")
            return rec if rec.get("status") == "completed" else None

        rec = await wait_for(applied, 30, "central to apply the completed envelope")
        assert rec["record"] == fixed
        assert rec["tables"] == ROWS
        assert rec["form_version"] == 1
        # Only the corrected envelope ever reached central.
        envelopes = await central.call("GET", f"/api/v1/envelopes?activity_id={act['id']}")
        listed = envelopes["envelopes"] if isinstance(envelopes, dict) else envelopes
        assert [e["outcome"] for e in listed] == ["applied"]
