"""Central replays an envelope against its form's logic, with the form version the envelope names.

Envelopes are published to a real broker as a gateway sends them: a completed
one that breaks a constraint is rejected with the constraint's message and
never applied; a good one is stored as the crew entered it; an envelope filled
against an older form version is judged by that version.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloud_bridge.service import Bridge
from outpost.wire import topics
from tests.cloud_bridge.conftest import Admin, FakeGateway
from tests.cloud_bridge.test_poison import raw_batch, raw_envelope

MakeGateway = Callable[[str], Awaitable[FakeGateway]]
CASES = json.loads(
    (Path(__file__).parents[1] / "data" / "form_logic_conformance.json").read_text("utf-8")
)
FORM = CASES["forms"]["inspection"]
GOOD = {
    "site_ok": "yes",
    "has_power": "yes",
    "reading": 230.5,
    "checks": ["fence", "roof"],
    "roof_note": "two tiles cracked",
    "done": True,
    "total": "2.5",
    "rows_count": "1",
    "summary": "parts: 1, total 2.5",
}
ROWS = {"parts": [{"part": "hinge", "amount": 2.5, "line": "1"}]}


def _completed(activity_id: str, record: dict[str, Any], form_version: int = 1) -> dict[str, Any]:
    return raw_envelope(
        activity_id,
        1,
        {
            "status": "completed",
            "record": record,
            "tables": ROWS,
            "form_version": form_version,
            "created_at": datetime.now(UTC).isoformat(),
        },
    )


async def test_central_refuses_a_constraint_breaking_envelope_and_keeps_a_good_one_as_entered(
    bridge: Bridge, admin: Admin, gateways: MakeGateway
) -> None:
    await admin.seed("warm-up")  # ana, the plain inspection type
    await admin.ok(
        "POST", "/api/v1/activity-types", {"name": "site_check", "offline": True, "form": FORM}
    )
    ids = ["logic-good", "logic-bad", "logic-old"]
    for aid in ids:
        await admin.ok(
            "POST",
            "/api/v1/activities",
            {"title": "Site check", "type": "site_check", "responsible": "ana", "id": aid},
        )
        await admin.ok("POST", f"/api/v1/activities/{aid}/approve", {"approver": "ana"})
    gw = await gateways("site-a")
    for aid in ids:
        await admin.ok("POST", f"/api/v1/activities/{aid}/dispatch", {"gateway_id": "site-a"})
        await gw.expect("down/dispatch")

    # Version 2 allows readings up to 300 only; "logic-old" was filled against version 1.
    stricter = json.loads(json.dumps(FORM))
    for f in stricter["fields"]:
        if f["name"] == "reading":
            f["constraint"] = ". >= 0 and . <= 300"
            f["constraint_message"] = "At most 300 now."
    await admin.ok(
        "POST", "/api/v1/activity-types", {"name": "site_check", "offline": True, "form": stricter}
    )
    # The new version goes down with every activity of the type checked out to the gateway.
    refreshed = [await gw.expect("down/dispatch") for _ in ids]
    assert sorted(d.activity.id for d in refreshed) == sorted(ids)
    assert {d.activity.form_version for d in refreshed} == {2}
    assert {d.activity.form.fields[3].constraint for d in refreshed} == {". >= 0 and . <= 300"}

    good = _completed("logic-good", GOOD, form_version=2)
    bad = _completed("logic-bad", {**GOOD, "reading": 600}, form_version=2)
    old = _completed("logic-old", {**GOOD, "reading": 450}, form_version=1)
    await gw.publish(topics.UP_ENVELOPES, raw_batch("site-a", [good, bad, old]))
    results = await gw.results(3)

    refused = results[uuid.UUID(bad["envelope_id"])]
    assert (refused.outcome, refused.code) == ("rejected", "validation")
    assert "At most 300 now." in (refused.reason or "")
    never_stored = await admin.ok("GET", "/api/v1/activities/logic-bad/record")
    assert never_stored["record"] is None and never_stored["status"] is None

    assert results[uuid.UUID(good["envelope_id"])].outcome == "applied"
    stored = await admin.ok("GET", "/api/v1/activities/logic-good/record")
    assert stored["record"] == GOOD
    assert stored["tables"] == ROWS
    assert stored["status"] == "completed"

    # Judged by its own version: 450 was allowed in version 1.
    assert results[uuid.UUID(old["envelope_id"])].outcome == "applied"
    assert (await admin.ok("GET", "/api/v1/activities/logic-old/record"))["form_version"] == 1


async def test_an_envelope_naming_a_version_central_never_had_is_rejected(
    bridge: Bridge, admin: Admin, gateways: MakeGateway
) -> None:
    await admin.seed("warm-up")
    await admin.ok(
        "POST", "/api/v1/activity-types", {"name": "site_check", "offline": True, "form": FORM}
    )
    await admin.ok(
        "POST",
        "/api/v1/activities",
        {"title": "Site check", "type": "site_check", "responsible": "ana", "id": "logic-v9"},
    )
    await admin.ok("POST", "/api/v1/activities/logic-v9/approve", {"approver": "ana"})
    gw = await gateways("site-a")
    await admin.ok("POST", "/api/v1/activities/logic-v9/dispatch", {"gateway_id": "site-a"})
    await gw.expect("down/dispatch")
    # A good answer under version 1, but the envelope says version 9.
    env = _completed("logic-v9", GOOD, form_version=9)
    await gw.publish(topics.UP_ENVELOPES, raw_batch("site-a", [env]))
    result = (await gw.results(1))[uuid.UUID(env["envelope_id"])]
    assert (result.outcome, result.code) == ("rejected", "validation")
    assert result.reason == (
        "The envelope was filled against form version 9 of 'site_check', "
        "which central does not have (its newest is 1)."
    )
    assert (await admin.ok("GET", "/api/v1/activities/logic-v9/record"))["record"] is None
