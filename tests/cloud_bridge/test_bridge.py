"""The bridge over a real Mosquitto: end to end, bad payloads, check-out, pushes."""

from __future__ import annotations

import asyncio
import json
import uuid
import zlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from cloud_bridge.service import Bridge
from outpost.wire import topics
from outpost.wire.codec import encode
from outpost.wire.schemas import (
    CheckoutAnswer,
    CheckoutRequest,
    Dispatch,
    GatewayState,
    Heartbeat,
    Recall,
    UserPush,
)
from tests.cloud_bridge.conftest import Admin, FakeGateway, envelope

MakeGateway = Callable[[str], Awaitable[FakeGateway]]


async def test_end_to_end_dispatch_replay_check_in(
    bridge: Bridge, admin: Admin, gateways: MakeGateway
) -> None:
    gw = await gateways("site-a")
    aid = await admin.seed()
    out = await admin.ok("POST", f"/api/v1/activities/{aid}/dispatch", {"gateway_id": "site-a"})
    assert (out["state"], out["holder_gateway"], out["holder_user"]) == ("offline", "site-a", "ana")
    dispatch = await gw.expect("down/dispatch")
    assert isinstance(dispatch, Dispatch)
    assert dispatch.activity.id == aid and dispatch.holder == "ana"
    assert dispatch.activity.form.tables[0].name == "readings"
    online = await admin.ok("GET", "/api/v1/activities?state=online")
    assert aid not in [a["id"] for a in online["activities"]]
    offline = await admin.ok("GET", "/api/v1/activities?state=offline")
    assert aid in [a["id"] for a in offline["activities"]]

    e1 = envelope(aid, 1, base_version=dispatch.activity.version)
    e2 = envelope(aid, 2, base_version=dispatch.activity.version, status="completed")
    await gw.publish(topics.UP_ENVELOPES, gw.batch([e1, e2]))
    results = await gw.results(2)
    assert [results[e.envelope_id].outcome for e in (e1, e2)] == ["applied", "applied"]
    assert results[e2.envelope_id].checked_in

    rec = await admin.ok("GET", f"/api/v1/activities/{aid}/record")
    assert rec["record"] == e2.record and rec["tables"] == e2.tables
    assert rec["state"] == "online" and rec["version"] == 2
    env = await admin.ok("GET", f"/api/v1/envelopes/{e1.envelope_id}")
    assert env["outcome"] == "applied" and env["applied_at"] and env["received_at"]
    online = await admin.ok("GET", "/api/v1/activities?state=online")
    assert aid in [a["id"] for a in online["activities"]]

    # Redelivery of the same batch: the same answers, no second effect.
    await gw.publish(topics.UP_ENVELOPES, gw.batch([e1, e2]))
    again = await gw.results(2)
    assert again == results
    envs = await admin.ok("GET", f"/api/v1/envelopes?activity_id={aid}")
    assert len(envs["envelopes"]) == 2


async def test_bad_payloads_are_dropped_and_others_flow(
    bridge: Bridge, admin: Admin, gateways: MakeGateway
) -> None:
    bad = await gateways("site-bad")
    good = await gateways("site-good")
    aid = await admin.seed()
    await admin.ok("POST", f"/api/v1/activities/{aid}/dispatch", {"gateway_id": "site-good"})
    await good.expect("down/dispatch")
    e1 = envelope(aid, 1)
    payloads: list[bytes] = [
        b"\x00\xff garbage",  # not our codec
        b"\x01\x01" + b"not zlib",  # corrupt compression
        b"\x01\x00{not json",
        b"\x01\x00" + json.dumps({"kind": "envelope_batch", "gateway_id": "site-bad"}).encode(),
        b"\x01\x01" + zlib.compress(json.dumps({"kind": "heartbeat", "surprise": 1}).encode()),
    ]
    for p in payloads:
        await bad.publish(topics.UP_ENVELOPES, p)
    # A batch that names another gateway than its topic's.
    await bad.publish(topics.UP_ENVELOPES, bad.batch([e1], gateway_id="site-good"))
    # A message of the wrong kind for the leaf.
    await bad.publish(
        topics.UP_ENVELOPES,
        GatewayState(gateway_id="site-bad", state="online", at=datetime.now(UTC)),
    )
    # A leaf nobody defined, and a topic whose gateway id is not one.
    await bad.publish("up/surprise", bad.batch([e1]))
    await bad.client.async_publish(
        "outpost/v1/gw/NOT_AN_ID/up/envelopes", encode(bad.batch([e1])), qos=1
    )
    # The good gateway's batch still goes through, after all of that.
    await good.publish(topics.UP_ENVELOPES, good.batch([e1]))
    (res,) = (await good.results(1)).values()
    assert res.outcome == "applied"
    assert bridge.mqtt is not None and bridge.mqtt.connected
    assert bridge.handler is not None
    async with asyncio.timeout(10):
        while bridge.handler.dropped < len(payloads) + 4:
            await asyncio.sleep(0.05)
    info = await admin.ok("GET", "/api/v1/gateways/site-bad")
    # Messages are handled concurrently, so which drop is noted last is not fixed; it
    # must be one of this gateway's bad messages, said in words.
    reasons = (
        "undecodable payload",
        "does not belong on",
        "payload names gateway",
        "unknown topic leaf",
    )
    assert any(r in info["last_error"] for r in reasons), info["last_error"]
    dropped = {
        s.labels["problem"]: s.value
        for m in bridge.handler.metrics.dropped.collect()
        for s in m.samples
        if s.name.endswith("_total")
    }
    assert dropped == {
        "undecodable": 5,
        "wrong_kind": 1,
        "wrong_gateway": 1,
        "unknown_leaf": 1,
        "foreign_topic": 1,
    }, dropped
    assert bad.inbox.empty()  # nothing answered to garbage
    # The envelope the mismatched batch carried was not recorded for anyone.
    env = await admin.ok("GET", f"/api/v1/envelopes/{e1.envelope_id}")
    assert env["gateway_id"] == "site-good"


async def test_checkout_request_answers_on_response_topic(
    bridge: Bridge, admin: Admin, gateways: MakeGateway
) -> None:
    gw = await gateways("site-a")
    aid = await admin.seed()
    req = CheckoutRequest(
        gateway_id="site-a", request_id=uuid.uuid4(), activity_id=aid, username="ana"
    )
    await gw.publish(
        topics.UP_CHECKOUT,
        req,
        response_topic=topics.topic("site-a", topics.DOWN_CHECKOUT),
        correlation_data=req.request_id.bytes,
    )
    async with asyncio.timeout(10):
        while True:
            leaf, answer, raw = await gw.inbox.get()
            if leaf == topics.DOWN_CHECKOUT:
                break
    assert isinstance(answer, CheckoutAnswer)
    assert answer.ok and answer.request_id == req.request_id and answer.activity is not None
    assert raw.correlation_data == req.request_id.bytes
    # The answer may be lost on a bad link: the same gateway asking again gets it again.
    retry = CheckoutRequest(
        gateway_id="site-a", request_id=uuid.uuid4(), activity_id=aid, username="ana"
    )
    await gw.publish(topics.UP_CHECKOUT, retry)
    answer_again = await gw.expect(topics.DOWN_CHECKOUT)
    assert answer_again.ok and answer_again.request_id == retry.request_id
    assert answer_again.activity == answer.activity
    # A second request (another gateway) is refused with the rule's code.
    other = await gateways("site-b")
    req2 = CheckoutRequest(
        gateway_id="site-b", request_id=uuid.uuid4(), activity_id=aid, username="ana"
    )
    await other.publish(topics.UP_CHECKOUT, req2)
    answer2 = await other.expect(topics.DOWN_CHECKOUT)
    assert (answer2.ok, answer2.code) == (False, "already_checked_out")
    assert answer2.reason


async def test_state_heartbeat_and_user_pushes(
    bridge: Bridge, admin: Admin, gateways: MakeGateway
) -> None:
    gw = await gateways("site-a")
    await admin.seed()
    now = datetime.now(UTC)
    await gw.publish(
        topics.STATE, GatewayState(gateway_id="site-a", state="online", at=now, version="0.1.0")
    )
    push = await gw.expect(topics.DOWN_USERS)
    assert isinstance(push, UserPush)
    assert [u.username for u in push.users] == ["ana"] and push.offline_types == ["inspection"]
    hb = Heartbeat(
        gateway_id="site-a",
        sent_at=now,
        version="0.1.0",
        uptime_s=5,
        counts={"queued": 2, "sent": 1},
        oldest_pending_s=12.5,
        rejected=0,
        disk_free_bytes=10**9,
        db_bytes=4096,
        devices=3,
    )
    await gw.publish(topics.UP_HEARTBEAT, hb)
    async with asyncio.timeout(10):
        while True:
            info = await admin.ok("GET", "/api/v1/gateways/site-a")
            if info["heartbeat_at"]:
                break
            await asyncio.sleep(0.05)
    assert info["online"] and info["backlog"] == 3 and info["disk_free_bytes"] == 10**9
    fleet = await admin.ok("GET", "/api/v1/gateways")
    assert [g["id"] for g in fleet["gateways"]] == ["site-a"]
    # A permission change is pushed to every known gateway.
    await admin.ok(
        "PUT",
        "/api/v1/users/bob",
        {"password": "another secret", "offline": True, "sites": ["site-a"]},
    )
    push = await gw.expect(topics.DOWN_USERS)
    assert {(u.username, u.offline) for u in push.users} == {("ana", True), ("bob", True)}
    # Taken off the site: gone from that gateway's snapshot at once.
    await admin.ok("PUT", "/api/v1/users/bob", {"sites": []})
    push = await gw.expect(topics.DOWN_USERS)
    assert [u.username for u in push.users] == ["ana"]


async def test_cancel_recalls_from_the_holder(
    bridge: Bridge, admin: Admin, gateways: MakeGateway
) -> None:
    gw = await gateways("site-a")
    aid = await admin.seed()
    await admin.ok("POST", f"/api/v1/activities/{aid}/dispatch", {"gateway_id": "site-a"})
    await gw.expect(topics.DOWN_DISPATCH)
    status, body = await admin.call("PATCH", f"/api/v1/activities/{aid}", {"title": "x"})
    assert (status, body["error"]["code"]) == (409, "checked_out")
    out = await admin.ok("POST", f"/api/v1/activities/{aid}/cancel", {"reason": "site flooded"})
    assert out["state"] == "canceled" and out["recalled_from"] == "site-a" and out["recall_sent"]
    recall = await gw.expect(topics.DOWN_DISPATCH)
    assert isinstance(recall, Recall) and recall.reason == "site flooded"
    await gw.publish(topics.UP_ENVELOPES, gw.batch([envelope(aid, 1)]))
    (res,) = (await gw.results(1)).values()
    assert (res.outcome, res.code) == ("rejected", "canceled")


async def test_uplink_no_parser_takes_is_dropped_with_a_reason(
    bridge: Bridge, admin: Admin, gateways: MakeGateway
) -> None:
    """Deep nesting, numbers past int(), lone surrogates, oversize: each a drop, none an error."""
    gw = await gateways("site-a")
    hb = Heartbeat(
        gateway_id="site-a",
        sent_at=datetime.now(UTC),
        version="0.3.0",
        uptime_s=1.0,
        counts={},
        rejected=0,
        disk_free_bytes=1,
        db_bytes=1,
        devices=0,
    ).model_dump(mode="json")
    documents = [
        "[" * 100_000 + "]" * 100_000,
        json.dumps(hb).replace('"uptime_s": 1.0', '"uptime_s": ' + "9" * 5000),
        json.dumps(hb).replace('"uptime_s": 1.0', '"uptime_s": 1e999'),
        json.dumps(dict(hb, version="\ud800")),
        json.dumps(hb) + " " * (17 * 1024),  # over a heartbeat's 16 KiB
    ]
    for doc in documents:
        await gw.publish(topics.UP_HEARTBEAT, b"\x01\x01" + zlib.compress(doc.encode()))
    await gw.publish(topics.UP_HEARTBEAT, b"\x01\x00" + json.dumps(hb).encode())
    assert bridge.handler is not None
    async with asyncio.timeout(15):
        while bridge.handler.dropped < len(documents):
            await asyncio.sleep(0.05)
    async with asyncio.timeout(15):
        while (await admin.ok("GET", "/api/v1/gateways/site-a")).get("version") != "0.3.0":
            await asyncio.sleep(0.05)
    info = await admin.ok("GET", "/api/v1/gateways/site-a")
    assert info["version"] == "0.3.0"  # the good heartbeat after them was recorded
    assert "undecodable payload" in info["last_error"]


async def test_a_checkout_request_for_someone_central_does_not_push_there_is_refused(
    bridge: Bridge, admin: Admin, gateways: MakeGateway
) -> None:
    gw = await gateways("site-x")  # ana's sites do not include site-x
    aid = await admin.seed()
    req = CheckoutRequest(
        gateway_id="site-x", request_id=uuid.uuid4(), activity_id=aid, username="ana"
    )
    await gw.publish(topics.UP_CHECKOUT, req)
    answer = await gw.expect(topics.DOWN_CHECKOUT)
    assert (answer.ok, answer.code, answer.activity) == (False, "user_not_at_site", None)
    assert "site-x" in (answer.reason or "")
    activity = await admin.ok("GET", f"/api/v1/activities/{aid}")
    assert activity["state"] == "online"
