"""An activity central sent back with a note: a new round of field work on the gateway."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.store import outbox
from gateway.store.activities import upsert_activity
from gateway.store.store import Store
from outpost.wire.schemas import EnvelopeResult, ReviewNote
from tests.gateway.conftest import DISPATCHED_AT, activity, envelope_body
from tests.support.store_tasks import SqlWrite

NOTE = "Meter A1 reads 14.2 but the photo shows 41.2; check it."


def _review(round_no: int = 2, after_seq: int = 2) -> ReviewNote:
    return ReviewNote(
        round=round_no,
        note=NOTE,
        reviewer="Dora Dispatcher",
        reviewed_at=DISPATCHED_AT + timedelta(hours=2),
        after_seq=after_seq,
    )


def _applied(envelope_id: str, checked_in: bool, at: datetime) -> EnvelopeResult:
    return EnvelopeResult(
        envelope_id=uuid.UUID(envelope_id),
        activity_id="act-1",
        outcome="applied",
        applied_at=at,
        activity_version=4 if checked_in else 3,
        checked_in=checked_in,
    )


async def _complete_first_round(
    client: TestClient[Any, Any], alice: dict[str, str], store: Store, *, check_in: bool = True
) -> list[dict[str, Any]]:
    sent = [envelope_body(seq=1), envelope_body(seq=2, status="completed", notes="all fine")]
    for body in sent:
        resp = await client.post("/api/v1/envelopes", json=body, headers=alice)
        assert resp.status == 201, await resp.text()
    at = DISPATCHED_AT + timedelta(hours=1)
    results = [_applied(sent[0]["envelope_id"], False, at)]
    if check_in:
        results.append(_applied(sent[1]["envelope_id"], True, at))
    await store.async_write(SqlWrite(lambda c: outbox.apply_results(c, results, at)))
    return sent


async def _get(client: TestClient[Any, Any], alice: dict[str, str], path: str) -> Any:
    resp = await client.get(path, headers=alice)
    assert resp.status == 200, await resp.text()
    return await resp.json()


def _sent_back(version: int = 4, review: ReviewNote | None = None) -> Any:
    a = activity("act-1", "alice").model_copy(update={"version": version})
    return lambda c: upsert_activity(
        c,
        a,
        "alice",
        DISPATCHED_AT + timedelta(hours=2),
        review or _review(),
        from_dispatch=True,
    )


async def test_sent_back_activity_opens_a_new_round_with_the_note(
    client: TestClient[Any, Any], alice: dict[str, str], seeded_store: Store
) -> None:
    await _complete_first_round(client, alice, seeded_store)
    listed = await _get(client, alice, "/api/v1/activities")
    assert "act-1" not in {a["id"] for a in listed["activities"]}  # checked in

    assert await seeded_store.async_write(SqlWrite(_sent_back()))
    listed = {a["id"]: a for a in (await _get(client, alice, "/api/v1/activities"))["activities"]}
    act = listed["act-1"]
    assert (
        act["review"]
        == {
            "round": 2,
            "note": NOTE,
            "by": "Dora Dispatcher",
            "at": "2026-11-23T10:00:00Z",
        }
        or act["review"]["note"] == NOTE
    )
    assert act["status"] == "in_progress" and act["read_only"] is False
    assert act["next_seq"] == 3 and act["round_after"] == 2 and act["version"] == 4
    detail = await _get(client, alice, "/api/v1/activities/act-1")
    assert detail["latest_envelope"]["record"]["notes"] == "all fine"

    # The correction goes in as seq 3 on the new version; a completed one locks the round.
    fixed = envelope_body(seq=3, status="completed", notes="A1 reads 41.2", base_version=4)
    resp = await client.post("/api/v1/envelopes", json=fixed, headers=alice)
    assert resp.status == 201, await resp.text()
    resp = await client.post("/api/v1/envelopes", json=envelope_body(seq=4), headers=alice)
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "activity_completed"
    act = (await _get(client, alice, "/api/v1/activities"))["activities"]
    assert next(a for a in act if a["id"] == "act-1")["status"] == "completed"

    # The same dispatch again (central re-sends on reconnect) changes nothing.
    assert await seeded_store.async_write(SqlWrite(_sent_back()))
    act = next(
        a
        for a in (await _get(client, alice, "/api/v1/activities"))["activities"]
        if a["id"] == "act-1"
    )
    assert act["status"] == "completed" and act["round_after"] == 2


async def test_the_note_before_the_check_in_result_still_opens_the_round(
    client: TestClient[Any, Any], alice: dict[str, str], seeded_store: Store
) -> None:
    sent = await _complete_first_round(client, alice, seeded_store, check_in=False)
    # The review dispatch overtakes the first round's check-in result.
    assert await seeded_store.async_write(SqlWrite(_sent_back()))
    late = _applied(sent[1]["envelope_id"], True, DISPATCHED_AT + timedelta(hours=1))
    await seeded_store.async_write(
        SqlWrite(lambda c: outbox.apply_results(c, [late], late.applied_at))
    )
    listed = {a["id"]: a for a in (await _get(client, alice, "/api/v1/activities"))["activities"]}
    assert listed["act-1"]["review"]["note"] == NOTE  # still offline: not checked in by it
    assert listed["act-1"]["read_only"] is False


async def test_a_late_redelivered_dispatch_does_not_reopen_a_checked_in_activity(
    client: TestClient[Any, Any], alice: dict[str, str], seeded_store: Store
) -> None:
    await _complete_first_round(client, alice, seeded_store)
    stale = activity("act-1", "alice")
    taken = await seeded_store.async_write(
        SqlWrite(lambda c: upsert_activity(c, stale, "alice", DISPATCHED_AT, from_dispatch=True))
    )
    assert taken is False
    listed = (await _get(client, alice, "/api/v1/activities"))["activities"]
    assert "act-1" not in {a["id"] for a in listed}


async def test_numbering_follows_central_when_the_gateway_forgot_the_last_round(
    client: TestClient[Any, Any], alice: dict[str, str], seeded_store: Store
) -> None:
    # A gateway that never held (or already expired) the earlier envelopes.
    a = activity("act-new", "alice").model_copy(update={"version": 4})
    await seeded_store.async_write(
        SqlWrite(
            lambda c: upsert_activity(
                c, a, "alice", datetime.now(UTC), _review(after_seq=7), from_dispatch=True
            )
        )
    )
    act = next(
        x
        for x in (await _get(client, alice, "/api/v1/activities"))["activities"]
        if x["id"] == "act-new"
    )
    assert act["next_seq"] == 8
    resp = await client.post(
        "/api/v1/envelopes",
        json=envelope_body("act-new", seq=1, base_version=4),
        headers=alice,
    )
    assert resp.status == 409 and (await resp.json())["error"]["expected_seq"] == 8
