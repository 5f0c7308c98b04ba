"""Review: approved / has_issues, the way back to the field, and the second round."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from cloud_bridge.service import Bridge
from outpost.wire.schemas import Dispatch, GatewayState
from tests.cloud_bridge.conftest import Admin, FakeGateway, envelope
from tests.support.broker import Broker


async def _first_round(admin: Admin, gw: FakeGateway, aid: str = "act-1") -> tuple[Dispatch, Any]:
    """Seed, dispatch to ``gw`` and complete the activity there (seq 1 draft, 2 completed)."""
    await admin.seed(aid)
    await admin.ok("POST", f"/api/v1/activities/{aid}/dispatch", {"gateway_id": gw.gateway_id})
    dispatch = await gw.expect("down/dispatch")
    assert isinstance(dispatch, Dispatch) and dispatch.review is None
    v = dispatch.activity.version
    e1 = envelope(aid, 1, base_version=v)
    e2 = envelope(aid, 2, base_version=v, status="completed", record={"site_ok": False})
    await gw.publish("up/envelopes", gw.batch([e1, e2]))
    results = await gw.results(2)
    assert results[e2.envelope_id].checked_in
    return dispatch, e2


async def test_has_issues_sends_it_back_and_the_second_round_applies(
    bridge: Bridge, admin: Admin, gateways: Callable[[str], Awaitable[FakeGateway]]
) -> None:
    gw = await gateways("site-a")
    first, e2 = await _first_round(admin, gw)

    out = await admin.ok(
        "POST",
        "/api/v1/activities/act-1/review",
        {"state": "has_issues", "note": "The north fence photo is missing."},
    )
    assert out["sent_to_gateway"] == "site-a"
    assert out["activity"]["state"] == "offline"
    assert out["review"]["round"] == 1 and out["review"]["envelope_id"] == str(e2.envelope_id)
    assert out["review"]["reviewer"] == "admin-token" and out["review"]["via"] == "admin_token"

    back = await gw.expect("down/dispatch")
    assert isinstance(back, Dispatch) and back.review is not None
    assert back.review.note == "The north fence photo is missing."
    assert back.review.round == 2 and back.review.after_seq == 2
    assert back.activity.version == first.activity.version + 1  # the check-in bumped it

    # The online list no longer has it; it is offline again at site-a.
    offline = await admin.ok("GET", "/api/v1/activities?state=offline")
    assert [a["id"] for a in offline["activities"]] == ["act-1"]

    # The crew corrects and completes again: seq continues, base is the new version.
    e3 = envelope("act-1", 3, base_version=back.activity.version, status="completed")
    await gw.publish("up/envelopes", gw.batch([e3]))
    r3 = (await gw.results(1))[e3.envelope_id]
    assert r3.outcome == "applied" and r3.checked_in, r3

    record = await admin.ok("GET", "/api/v1/activities/act-1/record")
    assert record["envelope_id"] == str(e3.envelope_id) and record["record"]["site_ok"] is True

    reviews = await admin.ok("GET", "/api/v1/activities/act-1/reviews")
    assert reviews["review_state"] == "awaiting_review"  # the new upload is not reviewed yet
    assert reviews["round"] == 2
    rounds = reviews["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert [e["seq"] for e in rounds[0]["envelopes"]] == [1, 2]
    assert [e["seq"] for e in rounds[1]["envelopes"]] == [3]
    assert rounds[1]["sent_back_by"]["note"] == "The north fence photo is missing."
    assert rounds[0]["reviews"][0]["state"] == "has_issues"

    out = await admin.ok("POST", "/api/v1/activities/act-1/review", {"state": "approved"})
    assert out["sent_to_gateway"] is None and out["activity"]["state"] == "online"
    assert out["review"]["round"] == 2
    reviews = await admin.ok("GET", "/api/v1/activities/act-1/reviews")
    assert reviews["review_state"] == "approved"
    assert [r["state"] for r in reviews["rounds"][1]["reviews"]] == ["approved"]


async def test_a_reconnecting_gateway_gets_the_note_again(
    bridge: Bridge, admin: Admin, gateways: Callable[[str], Awaitable[FakeGateway]]
) -> None:
    gw = await gateways("site-a")
    await _first_round(admin, gw)
    await admin.ok(
        "POST", "/api/v1/activities/act-1/review", {"state": "has_issues", "note": "Redo it."}
    )
    await gw.expect("down/dispatch")
    # The gateway comes online again: central re-sends what it holds, note included.
    await gw.publish(
        "state",
        GatewayState(gateway_id="site-a", state="online", at=datetime.now(UTC), version="0.3.0"),
    )
    again = await gw.expect("down/dispatch")
    assert again.review is not None and again.review.note == "Redo it."


async def test_refusals_name_the_problem(
    bridge: Bridge, admin: Admin, gateways: Callable[[str], Awaitable[FakeGateway]]
) -> None:
    gw = await gateways("site-a")
    await admin.seed("act-1")
    # Nothing came back from the field yet.
    status, body = await admin.call(
        "POST", "/api/v1/activities/act-1/review", {"state": "approved"}
    )
    assert status == 409 and body["error"]["code"] == "not_reviewable", body
    await admin.ok("POST", "/api/v1/activities/act-1/dispatch", {"gateway_id": "site-a"})
    await gw.expect("down/dispatch")
    status, body = await admin.call(
        "POST", "/api/v1/activities/act-1/review", {"state": "approved"}
    )
    assert status == 409 and body["error"]["code"] == "checked_out", body
    for bad, code in (
        ({"state": "fine"}, "invalid_body"),
        ({"state": "has_issues"}, "note_required"),
        ({"state": "has_issues", "note": "   "}, "note_required"),
        ({"state": "approved", "note": "x" * 2001}, "invalid_body"),
    ):
        status, body = await admin.call("POST", "/api/v1/activities/act-1/review", bad)
        assert status in (400, 409) and body["error"]["code"] == code, (bad, body)
    status, body = await admin.call("POST", "/api/v1/activities/nope/review", {"state": "approved"})
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = await admin.call("GET", "/api/v1/activities/nope/reviews")
    assert status == 404


async def test_an_old_gateway_is_not_sent_a_note_it_cannot_read(
    bridge: Bridge, admin: Admin, gateways: Callable[[str], Awaitable[FakeGateway]]
) -> None:
    gw = await gateways("site-d")
    await gw.publish(
        "state",
        GatewayState(gateway_id="site-d", state="online", at=datetime.now(UTC), version="0.2.0"),
    )
    await gw.expect("down/users")
    await _first_round(admin, gw)
    status, body = await admin.call(
        "POST", "/api/v1/activities/act-1/review", {"state": "has_issues", "note": "Redo."}
    )
    assert status == 409 and body["error"]["code"] == "gateway_too_old", body
    assert "0.2.0" in body["error"]["message"]
    activity = await admin.ok("GET", "/api/v1/activities/act-1")
    assert activity["state"] == "online"  # nothing was checked out
    # Approving still works.
    await admin.ok("POST", "/api/v1/activities/act-1/review", {"state": "approved"})


async def test_sending_back_needs_the_rules_of_check_out(
    bridge: Bridge, admin: Admin, gateways: Callable[[str], Awaitable[FakeGateway]]
) -> None:
    gw = await gateways("site-a")
    await _first_round(admin, gw)
    await admin.ok("PUT", "/api/v1/users/ana", {"offline": False})
    status, body = await admin.call(
        "POST", "/api/v1/activities/act-1/review", {"state": "has_issues", "note": "Redo."}
    )
    assert status == 409 and body["error"]["code"] == "user_not_offline", body
    reviews = await admin.ok("GET", "/api/v1/activities/act-1/reviews")
    assert reviews["reviews"] == [] and reviews["review_state"] == "awaiting_review"


async def test_sending_back_without_a_broker_is_503_and_changes_nothing(
    bridge: Bridge,
    admin: Admin,
    gateways: Callable[[str], Awaitable[FakeGateway]],
    broker: Broker,
) -> None:
    gw = await gateways("site-a")
    await _first_round(admin, gw)
    await gw.stop()
    broker.stop()
    status, body = await admin.call(
        "POST", "/api/v1/activities/act-1/review", {"state": "has_issues", "note": "Redo."}
    )
    assert (status, body["error"]["code"]) == (503, "broker_unavailable"), body
    assert "nothing changed" in body["error"]["message"]
    act = await admin.ok("GET", "/api/v1/activities/act-1")
    assert act["state"] == "online" and act["holder_gateway"] is None
    reviews = await admin.ok("GET", "/api/v1/activities/act-1/reviews")
    assert reviews["reviews"] == [] and reviews["review_state"] == "awaiting_review"
