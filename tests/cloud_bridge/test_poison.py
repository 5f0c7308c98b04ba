"""Poison envelopes over a real broker: one bad envelope costs one rejection, not a gateway.

The batches are published raw, as an old gateway (one without the wire
contract's bounds) would send what it accepted from devices: values no
database holds, next to good envelopes in the same batch.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from cloud_bridge.service import Bridge
from outpost.wire import topics
from outpost.wire.codec import encode_json
from tests.cloud_bridge.conftest import Admin, FakeGateway

MakeGateway = Callable[[str], Awaitable[FakeGateway]]


def raw_envelope(
    activity_id: str, seq: int, changes: dict[str, Any] | None = None
) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    env: dict[str, Any] = {
        "envelope_id": str(uuid.uuid4()),
        "activity_id": activity_id,
        "seq": seq,
        "base_version": 1,
        "status": "draft",
        "created_at": now,
        "received_at": now,
        "author": "ana",
        "form_version": 1,
        "record": {"site_ok": True, "notes": f"seq {seq}"},
        "tables": {"readings": [{"meter": "A1", "value": 1.5}]},
        "attachments": [],
    }
    env.update(changes or {})
    return env


def raw_batch(gateway_id: str, envelopes: list[dict[str, Any]]) -> bytes:
    document = {
        "kind": "envelope_batch",
        "gateway_id": gateway_id,
        "batch_id": str(uuid.uuid4()),
        "sent_at": datetime.now(UTC).isoformat(),
        "envelopes": envelopes,
    }
    # json.dumps writes NaN as the bare literal, as a Python gateway would have sent it.
    return encode_json(json.dumps(document).encode())


async def seed(admin: Admin, activity_ids: list[str], gateway_id: str = "site-a") -> None:
    await admin.seed(activity_ids[0])
    for aid in activity_ids[1:]:
        await admin.ok(
            "POST",
            "/api/v1/activities",
            {"title": "Fence", "type": "inspection", "responsible": "ana", "id": aid},
        )
        await admin.ok("POST", f"/api/v1/activities/{aid}/approve", {"approver": "ana"})
    for aid in activity_ids:
        await admin.ok("POST", f"/api/v1/activities/{aid}/dispatch", {"gateway_id": gateway_id})


# What an old gateway may have stored, and no database (or the contract) takes.
BAD: dict[str, dict[str, Any]] = {
    "base_version_2_31": {"base_version": 2**31},
    "base_version_2_63": {"base_version": 2**63},
    "seq_2_63": {"seq": 2**63},
    "form_version_2_31": {"form_version": 2**31},
    "form_version_2_63": {"form_version": 2**63},
    "created_at_year_0_utc": {"created_at": "0001-01-01T00:30:00+01:00"},
    "received_at_year_10000_utc": {"received_at": "9999-12-31T23:30:00-01:00"},
    "nul_in_a_field_name": {"record": {"site_ok": True, "no\x00tes": "x"}},
    "nul_in_a_table_name": {"tables": {"read\x00ings": []}},
    "nul_in_text": {"record": {"site_ok": True, "notes": "fence\x00gate"}},
    "nul_in_a_row": {"tables": {"readings": [{"meter": "A\x00", "value": 1.0}]}},
    "nul_in_the_author": {"author": "an\x00a"},
    "long_author": {"author": "a" * 5000},
    "long_text": {"record": {"site_ok": True, "notes": "x" * 100_000}},
    "nan": {"tables": {"readings": [{"meter": "A", "value": float("nan")}]}},
    "missing_field": {"status": None},
}


async def test_a_batch_of_poison_envelopes_costs_one_rejection_each(
    bridge: Bridge, admin: Admin, gateways: MakeGateway
) -> None:
    names = list(BAD)
    good_ids = ["good-1", "good-2"]
    bad_ids = [f"bad-{n}" for n in range(len(names))]
    gw = await gateways("site-a")
    await seed(admin, good_ids + bad_ids)
    for _ in good_ids + bad_ids:
        await gw.expect("down/dispatch")
    good = [raw_envelope(aid, 1) for aid in good_ids]
    bad = {name: raw_envelope(aid, 1, BAD[name]) for name, aid in zip(names, bad_ids, strict=True)}
    bad["missing_field"].pop("status")
    await gw.publish(topics.UP_ENVELOPES, raw_batch("site-a", [good[0], *bad.values(), good[1]]))

    results = await gw.results(len(good) + len(bad))
    for env in good:
        assert results[uuid.UUID(env["envelope_id"])].outcome == "applied"
    outcome = {name: results[uuid.UUID(env["envelope_id"])] for name, env in bad.items()}
    assert {name: r.outcome for name, r in outcome.items()} == dict.fromkeys(bad, "rejected")
    for name, r in outcome.items():
        assert r.code and r.reason, name
    # Central knows each one, with the same answer the crew got.
    for name, env in bad.items():
        seen = await admin.ok("GET", f"/api/v1/envelopes/{env['envelope_id']}")
        r = outcome[name]
        assert (seen["outcome"], seen["code"], seen["reason"]) == ("rejected", r.code, r.reason)
    gateway = await admin.ok("GET", "/api/v1/gateways/site-a")
    assert "not applied" in gateway["last_error"]

    # The uplink keeps draining: the next batch applies, including corrected envelopes.
    fixed = [raw_envelope(bad_ids[0], 2), raw_envelope(good_ids[0], 2)]
    await gw.publish(topics.UP_ENVELOPES, raw_batch("site-a", fixed))
    later = await gw.results(2)
    assert [later[uuid.UUID(e["envelope_id"])].outcome for e in fixed] == ["applied", "applied"]


async def test_an_envelope_without_an_id_is_dropped_alone(
    bridge: Bridge, admin: Admin, gateways: MakeGateway
) -> None:
    gw = await gateways("site-a")
    await seed(admin, ["act-1"])
    await gw.expect("down/dispatch")
    good = raw_envelope("act-1", 1)
    nameless = raw_envelope("act-1", 2, {"envelope_id": "not-a-uuid"})
    await gw.publish(topics.UP_ENVELOPES, raw_batch("site-a", [nameless, good]))
    (result,) = (await gw.results(1)).values()
    assert (result.envelope_id, result.outcome) == (uuid.UUID(good["envelope_id"]), "applied")
    gateway = await admin.ok("GET", "/api/v1/gateways/site-a")
    assert "cannot be answered" in gateway["last_error"]
