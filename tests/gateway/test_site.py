"""The site lead's view of the whole gateway (``GET /api/v1/site``).

Central grants a site lead per gateway and pushes it with the users
(``UserWire.site_lead``); a crew member keeps seeing only their own work and
is refused the site view with a reason.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.api.keys import AUTH_KEY
from gateway.store import Store
from gateway.store.activities import recall_activity, upsert_activity
from gateway.store.outbox import apply_results
from gateway.store.users import replace_users
from outpost.wire.codec import decode, encode
from outpost.wire.schemas import EnvelopeResult, UserPush, UserWire
from tests.gateway.conftest import (
    DISPATCHED_AT,
    activity,
    envelope_body,
    password_hash,
    sign_in,
    user_push,
)
from tests.support.store_tasks import SqlWrite

LATER = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


async def _post(client: TestClient[Any, Any], headers: dict[str, str], **kw: Any) -> str:
    body = envelope_body(**kw)
    resp = await client.post("/api/v1/envelopes", json=body, headers=headers)
    assert resp.status == 201, await resp.text()
    return str(body["envelope_id"])


async def _reject(store: Store, envelope_id: str, activity_id: str, code: str, reason: str) -> None:
    result = EnvelopeResult(
        envelope_id=uuid.UUID(envelope_id),
        activity_id=activity_id,
        outcome="rejected",
        code=code,
        reason=reason,
        applied_at=LATER,
    )
    await store.async_write(SqlWrite(lambda c: apply_results(c, [result], LATER)))


def test_the_site_lead_flag_is_optional_on_the_wire() -> None:
    """An older central sends no ``site_lead``: nobody is a site lead, nothing breaks."""
    old = {
        "kind": "users",
        "gateway_id": "site-test",
        "users": [{"username": "alice", "password_hash": password_hash("alice"), "offline": True}],
        "offline_types": ["inspection"],
        "pushed_at": "2026-11-23T09:00:00Z",
    }
    push = UserPush.model_validate(old)
    assert push.users[0].site_lead is False
    lead = UserWire(
        username="dana", password_hash=password_hash("alice"), offline=True, site_lead=True
    )
    again = decode(encode(push.model_copy(update={"users": [lead]})))
    assert again.users[0].site_lead is True


async def test_only_the_site_lead_sees_the_whole_gateway(
    client: TestClient[Any, Any], seeded_store: Store
) -> None:
    alice = await sign_in(client, "alice")
    bob = await sign_in(client, "bob")
    me = await (await client.get("/api/v1/session", headers=bob)).json()
    assert me["user"] == {"username": "bob", "display_name": None, "site_lead": False}

    refused = await client.get("/api/v1/site", headers=bob)
    assert refused.status == 403
    error = (await refused.json())["error"]
    assert error["code"] == "not_site_lead"
    assert "site lead" in error["message"]
    assert (await client.get("/api/v1/site")).status == 401

    # Central makes bob site lead: the next push says so, and his session knows at once.
    await seeded_store.async_write(
        SqlWrite(lambda c: replace_users(c, user_push("alice", "bob", leads=("bob",))))
    )
    client.app[AUTH_KEY].forget_cached()  # as the uplink does after every user push
    me = await (await client.get("/api/v1/session", headers=bob)).json()
    assert me["user"]["site_lead"] is True
    signed = await client.post(
        "/api/v1/session", json={"username": "bob", "password": "bob-pass-2"}
    )
    assert (await signed.json())["user"]["site_lead"] is True

    # alice's work shows up in bob's site view (and never in his own lists).
    await _post(client, alice, activity_id="act-1", seq=1, status="completed")
    site = await (await client.get("/api/v1/site", headers=bob)).json()
    assert site["envelopes"]["queued"] == 1
    assert site["oldest_waiting"]["activity_id"] == "act-1"
    assert site["oldest_waiting"]["author"] == "alice"
    assert site["oldest_waiting"]["activity_title"] == "Inspect act-1"
    assert 0 <= site["oldest_waiting"]["age_s"] < 60
    own = await (await client.get("/api/v1/envelopes", headers=bob)).json()
    assert own["envelopes"] == []
    assert (await client.get("/api/v1/site", headers=alice)).status == 403


async def test_every_rejection_says_who_what_why_and_what_happened_after(
    client: TestClient[Any, Any], seeded_store: Store
) -> None:
    await seeded_store.async_write(
        SqlWrite(lambda c: replace_users(c, user_push("alice", "bob", leads=("bob",))))
    )
    for act_id in ("act-3", "act-4"):
        await seeded_store.async_write(
            SqlWrite(
                lambda c, a=act_id: upsert_activity(c, activity(a, "alice"), "alice", DISPATCHED_AT)
            )
        )
    alice = await sign_in(client, "alice")
    bob = await sign_in(client, "bob")
    # act-1: refused, then corrected by a later save; act-2: refused, still open;
    # act-3: refused, then central canceled the activity; act-bob: applied (not listed).
    e1 = await _post(client, alice, activity_id="act-1", seq=1, status="completed")
    await _reject(seeded_store, e1, "act-1", "conflict", "The fence height was changed on central.")
    await _post(client, alice, activity_id="act-1", seq=2, status="completed")
    e2 = await _post(client, alice, activity_id="act-2", seq=1, status="completed")
    await _reject(seeded_store, e2, "act-2", "validation", "meter is required in readings row 1")
    e3 = await _post(client, alice, activity_id="act-3", seq=1, status="completed")
    await _reject(seeded_store, e3, "act-3", "conflict", "edited online")
    await seeded_store.async_write(
        SqlWrite(lambda c: recall_activity(c, "act-3", "work order closed", LATER))
    )
    eb = await _post(client, bob, activity_id="act-bob", seq=1, status="completed")
    await seeded_store.async_write(
        SqlWrite(
            lambda c: apply_results(
                c,
                [
                    EnvelopeResult(
                        envelope_id=uuid.UUID(eb),
                        activity_id="act-bob",
                        outcome="applied",
                        applied_at=LATER,
                    )
                ],
                LATER + timedelta(minutes=1),
            )
        )
    )

    site = await (await client.get("/api/v1/site", headers=bob)).json()
    assert site["rejections_total"] == 3
    assert site["rejections_open"] == 1
    by_activity = {r["activity_id"]: r for r in site["rejections"]}
    assert set(by_activity) == {"act-1", "act-2", "act-3"}
    one = by_activity["act-1"]
    assert one["author"] == "alice" and one["activity_title"] == "Inspect act-1"
    assert one["code"] == "conflict"
    assert one["reason"] == "The fence height was changed on central."
    assert one["seq"] == 1 and one["rejected_at"] == "2026-11-23T12:00:00Z"
    assert one["after"]["what"] == "corrected"
    assert one["after"]["seq"] == 2 and one["after"]["state"] == "queued"
    assert by_activity["act-2"]["after"] == {"what": "open"}
    assert by_activity["act-3"]["after"]["what"] == "canceled"
    assert site["envelopes"] == {
        "stored": 0,
        "queued": 1,
        "sent": 0,
        "applied": 1,
        "rejected": 3,
    }
    assert site["last_sync"] is not None
    assert site["backhaul"]["link"] == "down"
    assert site["disk"]["free_bytes"] > 0 and site["disk"]["low"] is False
    assert site["disk"]["message"] is None
    assert site["replication"] == {"enabled": False}
    assert site["certificate"] == {"expires_at": None, "days_left": None}
    assert site["files"]["to_upload"] == 0
    assert site["crew_signed_in"] == 2
    assert site["gateway"]["id"] == "site-test"
