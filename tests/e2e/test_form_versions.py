"""Form versions end to end: real broker, bridge process and gateway (issue 17, "Versions").

The inspection XLSForm is imported centrally (version 1) and two activities
of it are dispatched; a draft is begun on one. Version 2 (the reading's
constraint tightened from 500 to 400 kWh) is imported: central sends it to
the gateway with the activities it holds. The draft begun on version 1 is
completed under version 1's rules and applied centrally as version 1; the
other activity, not begun, is filled in on version 2, where the same reading
is refused with version 2's message.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from cloud_bridge.xlsform import XLSX_CONTENT_TYPE
from gateway.app import running_gateway
from tests.data.make_inspection_xlsform import build
from tests.e2e.conftest import (
    ADMIN_TOKEN,
    GW,
    PASSWORD,
    BridgeProcess,
    Central,
    Device,
    gateway_config,
    wait_for,
)
from tests.e2e.test_attachments import put_blob
from tests.support.broker import Broker

TYPE = "site_inspection"


def workbook(limit: int) -> bytes:
    """The inspection XLSForm with the reading's upper bound at ``limit`` kWh."""
    wb = build()
    survey = wb["survey"]
    header = [c.value for c in survey[1]]
    name, constraint = header.index("name"), header.index("constraint")
    message = header.index("constraint_message::English (en)")
    for row in survey.iter_rows(min_row=2):
        if row[name].value == "reading":
            row[constraint].value = f". >= 0 and . <= {limit}"
            row[message].value = f"A reading is between 0 and {limit} kWh"
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


async def import_xlsform(central: Central, data: bytes) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": XLSX_CONTENT_TYPE}
    url = f"{central.url}/api/v1/activity-types?offline=true"
    async with central.http.post(url, data=data, headers=headers) as r:
        body = await r.json()
        assert r.status in (200, 201), (r.status, body)
        return dict(body)


def envelope(
    act: dict[str, Any], seq: int, status: str, version: int | None, record: dict[str, Any]
) -> dict[str, Any]:
    reading = record.pop("_reading")
    body = {
        "envelope_id": str(uuid.uuid4()),
        "activity_id": act["id"],
        "seq": seq,
        "base_version": act["version"],
        "status": status,
        "created_at": datetime.now(UTC).isoformat(),
        "record": record,
        "tables": {"readings": [{"meter": "M1", "reading": reading, "condition": "ok"}]},
        "attachments": [record[k] for k in ("site_photo", "signature") if k in record],
    }
    if version is not None:
        body["form_version"] = version
    return body


async def test_a_draft_completes_on_its_own_version_and_a_new_one_uses_the_next(
    tmp_path: Path, broker: Broker, bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    central = Central(http, bridge.url)
    first = await import_xlsform(central, workbook(500))
    assert (first["name"], first["form_version"]) == (TYPE, 1)
    await central.call(
        "PUT", "/api/v1/users/ana", {"password": PASSWORD, "offline": True, "sites": [GW]}
    )
    acts = []
    for title in ("North substation", "South substation"):
        made = await central.call(
            "POST", "/api/v1/activities", {"title": title, "type": TYPE, "responsible": "ana"}
        )
        await central.call("POST", f"/api/v1/activities/{made['id']}/approve", {"approver": "ana"})
        acts.append(made)
    begun, fresh = acts

    async with running_gateway(gateway_config(tmp_path, broker)) as gw:
        for act in acts:
            await central.dispatch(act["id"])
        device = Device(http, gw.url)
        await wait_for(device.sign_in, 20, "the user push to reach the gateway")

        async def versions() -> dict[str, int] | None:
            listed = {a["id"]: a["form_version"] for a in await device.activities()}
            return listed if len(listed) == 2 else None

        assert await wait_for(versions, 20, "the dispatches") == {
            begun["id"]: 1,
            fresh["id"]: 1,
        }
        photo, signature = b"\x89PNG photo of the site", b"\x89PNG signature strokes"
        shas = [await put_blob(device, blob) for blob in (photo, signature)]
        assert shas == [hashlib.sha256(b).hexdigest() for b in (photo, signature)]

        def answers(reading: float) -> dict[str, Any]:
            return {
                "site_name": "North substation",
                "inspection_date": "2026-12-01",
                "site_safe": "yes",
                "meters_expected": 1,
                "total_reading": f"{reading:g}",
                "site_photo": shas[0],
                "confirm": True,
                "signature": shas[1],
                "_reading": reading,
            }

        # A draft begun on version 1, with a reading of 450 (version 1 allows up to 500).
        draft = envelope(begun, 1, "draft", 1, answers(450))
        code, data = await device.call("POST", "/api/v1/envelopes", draft)
        assert code == 201, data

        # Version 2 is imported centrally and reaches the gateway with the activities.
        second = await import_xlsform(central, workbook(400))
        assert second["form_version"] == 2

        async def refreshed() -> dict[str, int] | None:
            listed = await versions()
            return listed if listed and listed[fresh["id"]] == 2 else None

        listed = await wait_for(refreshed, 20, "version 2 to reach the gateway")
        assert listed[begun["id"]] == 1  # its draft stays on the version it was begun on
        code, detail = await device.call("GET", f"/api/v1/activities/{begun['id']}")
        assert code == 200 and detail["form_version"] == 1
        assert _reading(detail["form"])["constraint"] == ". >= 0 and . <= 500"
        code, detail = await device.call("GET", f"/api/v1/activities/{fresh['id']}")
        assert code == 200 and detail["form_version"] == 2
        assert _reading(detail["form"])["constraint"] == ". >= 0 and . <= 400"

        # The same answers: accepted on the version 1 draft, refused on version 2.
        code, data = await device.call(
            "POST", "/api/v1/envelopes", envelope(fresh, 1, "completed", 2, answers(450))
        )
        assert code == 422, data
        assert data["error"]["code"] == "invalid_submission"
        assert "A reading is between 0 and 400 kWh" in data["error"]["message"]
        done = envelope(begun, 2, "completed", 1, answers(450))
        code, data = await device.call("POST", "/api/v1/envelopes", done)
        assert code == 201, data
        ok = envelope(fresh, 1, "completed", 2, answers(380))
        code, data = await device.call("POST", "/api/v1/envelopes", ok)
        assert code == 201, data

        async def applied(aid: str) -> Any:
            rec = await central.call("GET", f"/api/v1/activities/{aid}/record")
            return rec if rec.get("status") == "completed" else None

        old = await wait_for(lambda: applied(begun["id"]), 30, "central to apply the v1 draft")
        assert old["form_version"] == 1
        assert old["tables"]["readings"][0]["reading"] == 450
        assert old["envelope_id"] == done["envelope_id"]
        new = await wait_for(lambda: applied(fresh["id"]), 30, "central to apply the v2 one")
        assert new["form_version"] == 2 and new["tables"]["readings"][0]["reading"] == 380
        kept = await central.call("GET", f"/api/v1/activity-types/{TYPE}")
        assert [v["form_version"] for v in kept["versions"]] == [2, 1]


def _reading(form: dict[str, Any]) -> dict[str, Any]:
    (table,) = [t for t in form["tables"] if t["name"] == "readings"]
    (field,) = [f for f in table["fields"] if f["name"] == "reading"]
    return dict(field)
