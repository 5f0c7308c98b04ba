"""POST/GET envelopes: every rule, refusal and bad input; idempotency; rule 4."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select, update

from gateway.app import create_app
from gateway.store import Store
from gateway.store.activities import check_in_activity, recall_activity
from gateway.store.schema import REJECTED, envelopes
from outpost.times import utcnow
from outpost.wire.schemas import WireEnvelope
from tests.gateway.conftest import ClientFactory, envelope_body, make_gateway_config, sign_in
from tests.support.store_tasks import SqlRead, SqlWrite

URL = "/api/v1/envelopes"


async def _post(client: TestClient[Any, Any], headers: dict[str, str], body: Any) -> Any:
    return await client.post(URL, json=body, headers=headers)


async def _error(resp: Any, status: int, code: str) -> dict[str, Any]:
    text = await resp.text()
    assert resp.status == status, text
    body = json.loads(text)
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    assert "Traceback" not in text
    return dict(body["error"])


async def _states(store: Store, activity_id: str) -> list[tuple[int, str]]:
    rows = await store.async_read(
        SqlRead(
            lambda c: c.execute(
                select(envelopes.c.seq, envelopes.c.state)
                .where(envelopes.c.activity_id == activity_id)
                .order_by(envelopes.c.seq)
            ).all()
        )
    )
    return [(r.seq, r.state) for r in rows]


async def test_store_draft_answers_201_after_commit(
    client: TestClient[Any, Any], alice: dict[str, str], seeded_store: Store
) -> None:
    body = envelope_body()
    resp = await _post(client, alice, body)
    assert resp.status == 201
    answer = await resp.json()
    assert answer["envelope_id"] == body["envelope_id"]
    assert answer["state"] == "stored" and answer["seq"] == 1
    # Committed: a separate connection sees it right after the 201.
    conn = sqlite3.connect(seeded_store.path)
    row = conn.execute(
        "SELECT state, author, body FROM envelopes WHERE envelope_id=?", (body["envelope_id"],)
    ).fetchone()
    conn.close()
    assert row[0] == "stored" and row[1] == "alice"
    wire = WireEnvelope.model_validate_json(row[2])  # the uplink sends this verbatim
    assert wire.author == "alice" and wire.form_version == 1
    assert wire.created_at.isoformat().startswith("2026-11-23T09:00:00")  # device clock kept
    assert wire.received_at > wire.created_at  # gateway clock, separate


async def test_completed_queues_the_whole_activity(
    client: TestClient[Any, Any], alice: dict[str, str], seeded_store: Store
) -> None:
    for seq in (1, 2):
        assert (await _post(client, alice, envelope_body(seq=seq))).status == 201
    assert await _states(seeded_store, "act-1") == [(1, "stored"), (2, "stored")]
    resp = await _post(client, alice, envelope_body(seq=3, status="completed"))
    assert resp.status == 201
    assert (await resp.json())["state"] == "queued"
    assert await _states(seeded_store, "act-1") == [(1, "queued"), (2, "queued"), (3, "queued")]
    # other activities' drafts stay stored
    assert (await _post(client, alice, envelope_body("act-2"))).status == 201
    assert await _states(seeded_store, "act-2") == [(1, "stored")]


async def test_activity_is_read_only_after_completed_until_rejected(
    client: TestClient[Any, Any], alice: dict[str, str], seeded_store: Store
) -> None:
    completed = envelope_body(seq=1, status="completed")
    assert (await _post(client, alice, completed)).status == 201
    resp = await _post(client, alice, envelope_body(seq=2))
    await _error(resp, 409, "activity_completed")
    detail = await (await client.get("/api/v1/activities/act-1", headers=alice)).json()
    assert detail["status"] == "completed" and detail["read_only"] is True
    # Central rejects the completed one: the crew may send a corrected envelope.
    await seeded_store.async_write(
        SqlWrite(
            lambda c: c.execute(
                update(envelopes)
                .where(envelopes.c.envelope_id == completed["envelope_id"])
                .values(
                    state=REJECTED, code="validation", reason="meter A1 unknown", result_at=utcnow()
                )
            )
        )
    )
    detail = await (await client.get("/api/v1/activities/act-1", headers=alice)).json()
    assert detail["read_only"] is False and detail["next_seq"] == 2
    resp = await _post(client, alice, envelope_body(seq=2, status="completed"))
    assert resp.status == 201
    listed = await (await client.get(URL, params={"activity_id": "act-1"}, headers=alice)).json()
    assert [(e["seq"], e["state"], e["code"]) for e in listed["envelopes"]] == [
        (1, "rejected", "validation"),
        (2, "queued", None),
    ]
    assert listed["envelopes"][0]["reason"] == "meter A1 unknown"


async def test_seq_must_be_the_next_one(
    client: TestClient[Any, Any], alice: dict[str, str]
) -> None:
    err = await _error(await _post(client, alice, envelope_body(seq=2)), 409, "seq_mismatch")
    assert err["expected_seq"] == 1
    assert (await _post(client, alice, envelope_body(seq=1))).status == 201
    err = await _error(await _post(client, alice, envelope_body(seq=1)), 409, "seq_mismatch")
    assert err["expected_seq"] == 2 and "seq must be 2" in err["message"]


async def test_same_id_same_body_returns_the_first_answer(
    client: TestClient[Any, Any], alice: dict[str, str], seeded_store: Store
) -> None:
    body = envelope_body()
    first = await _post(client, alice, body)
    first_answer = await first.json()
    # key order and spacing do not matter; the answer is the first one
    again = await client.post(
        URL,
        data=json.dumps(dict(reversed(list(body.items()))), indent=2),
        headers={**alice, "Content-Type": "application/json"},
    )
    assert again.status == 201
    assert await again.json() == first_answer
    assert again.headers["Idempotent-Replayed"] == "true"
    # even after it moved on (completed later), the replay is the first answer
    assert (await _post(client, alice, envelope_body(seq=2, status="completed"))).status == 201
    assert await (await _post(client, alice, body)).json() == first_answer
    assert len(await _states(seeded_store, "act-1")) == 2


async def test_same_id_different_body_is_409(
    client: TestClient[Any, Any], alice: dict[str, str]
) -> None:
    body = envelope_body()
    assert (await _post(client, alice, body)).status == 201
    changed = {**body, "record": {"site_ok": False}}
    await _error(await _post(client, alice, changed), 409, "envelope_conflict")
    # another user replaying alice's id is a conflict too (nothing leaks)
    bob = await sign_in(client, "bob")
    await _error(
        await _post(client, bob, {**body, "activity_id": "act-bob"}), 409, "envelope_conflict"
    )


async def test_other_users_and_unknown_activities_are_404(
    client: TestClient[Any, Any], alice: dict[str, str]
) -> None:
    await _error(await _post(client, alice, envelope_body("act-bob")), 404, "activity_not_found")
    await _error(await _post(client, alice, envelope_body("no-such")), 404, "activity_not_found")
    resp = await client.get("/api/v1/activities/act-bob", headers=alice)
    await _error(resp, 404, "activity_not_found")
    resp = await client.get(URL, params={"activity_id": "act-bob"}, headers=alice)
    await _error(resp, 404, "activity_not_found")
    listed = await (await client.get("/api/v1/activities", headers=alice)).json()
    assert [a["id"] for a in listed["activities"]] == ["act-1", "act-2"]


async def test_recalled_and_checked_in_activities_refuse_writes(
    client: TestClient[Any, Any], alice: dict[str, str], seeded_store: Store
) -> None:
    now = utcnow()
    await seeded_store.async_write(
        SqlWrite(lambda c: recall_activity(c, "act-1", "crew reassigned", now))
    )
    err = await _error(await _post(client, alice, envelope_body("act-1")), 409, "activity_canceled")
    assert "crew reassigned" in err["message"]
    listed = await (await client.get("/api/v1/activities", headers=alice)).json()
    assert {a["id"]: a["status"] for a in listed["activities"]}["act-1"] == "canceled"
    await seeded_store.async_write(SqlWrite(lambda c: check_in_activity(c, "act-2", now)))
    await _error(await _post(client, alice, envelope_body("act-2")), 409, "activity_checked_in")
    listed = await (await client.get("/api/v1/activities", headers=alice)).json()
    assert "act-2" not in [a["id"] for a in listed["activities"]]  # rule 5


async def test_form_problems_are_422_with_every_problem(
    client: TestClient[Any, Any], alice: dict[str, str]
) -> None:
    body = envelope_body()
    body["status"] = "completed"  # required answers are checked on completion
    body["record"] = {"site_ok": "yes", "bogus": 1}
    body["tables"] = {"readings": [{"value": "high"}]}
    err = await _error(await _post(client, alice, body), 422, "invalid_submission")
    problems = " | ".join(err["problems"])
    assert "'site_ok' must be true or false" in problems
    assert "'bogus' is not a field" in problems
    assert "readings row 1 field 'meter' is required" in problems
    assert "'value' must be a number" in problems


async def test_a_draft_may_leave_required_answers_out(
    client: TestClient[Any, Any], alice: dict[str, str]
) -> None:
    body = envelope_body()
    body["record"] = {"notes": "started, site not checked yet"}
    body["tables"] = {"readings": [{"value": 2.5}]}
    assert (await _post(client, alice, body)).status == 201
    done = envelope_body(seq=2)
    done["status"] = "completed"
    done["record"] = {"notes": "forgot the safety question"}
    err = await _error(await _post(client, alice, done), 422, "invalid_submission")
    assert any("'site_ok' is required" in p for p in err["problems"])


async def test_bad_input_is_400_never_500(
    client: TestClient[Any, Any], alice: dict[str, str]
) -> None:
    headers = {**alice, "Content-Type": "application/json"}
    good = envelope_body()
    cases: list[tuple[bytes, str]] = [
        (b"{not json", "malformed_json"),
        (b"", "empty_body"),
        (b"[1, 2]", "invalid_envelope"),
        (b'"a string"', "invalid_envelope"),
        (json.dumps({k: v for k, v in good.items() if k != "seq"}).encode(), "invalid_envelope"),
        (json.dumps({**good, "seq": "1"}).encode(), "invalid_envelope"),
        (json.dumps({**good, "seq": 0}).encode(), "invalid_envelope"),
        (json.dumps({**good, "status": "done"}).encode(), "invalid_envelope"),
        (json.dumps({**good, "envelope_id": "not-a-uuid"}).encode(), "invalid_envelope"),
        (json.dumps({**good, "created_at": "2026-11-23T09:00:00"}).encode(), "invalid_envelope"),
        (json.dumps({**good, "author": "mallory"}).encode(), "invalid_envelope"),
        (json.dumps({**good, "record": []}).encode(), "invalid_envelope"),
        (json.dumps({**good, "attachments": ["xyz"]}).encode(), "invalid_envelope"),
        (b'{"envelope_id": ' + b"[" * 5000 + b"]" * 5000 + b"}", "invalid_envelope"),
    ]
    for raw, code in cases:
        resp = await client.post(URL, data=raw, headers=headers)
        if resp.status == 400 and (await resp.json())["error"]["code"] == "malformed_json":
            assert code in ("malformed_json", "invalid_envelope"), raw[:60]
            continue
        err = await _error(resp, 400, code)
        if code == "invalid_envelope" and raw.startswith(b"{") and b"[[[[" not in raw:
            assert err["problems"], raw[:60]


async def test_oversized_body_is_413(aiohttp_client: ClientFactory, seeded_store: Store) -> None:
    config = make_gateway_config(seeded_store.path.parent, lan={"max_body_bytes": 2048})
    client = await aiohttp_client(create_app(config, seeded_store))
    alice = await sign_in(client)
    resp = await _post(client, alice, envelope_body(notes="x" * 4000))
    err = await _error(resp, 413, "body_too_large")
    assert "2048" in err["message"]


async def test_unknown_paths_and_methods_are_json(
    client: TestClient[Any, Any], alice: dict[str, str]
) -> None:
    await _error(await client.get("/api/v1/nothing", headers=alice), 404, "not_found")
    await _error(await client.get("/nothing"), 404, "not_found")
    resp = await client.patch(URL, headers=alice)
    await _error(resp, 405, "method_not_allowed")
    assert "POST" in resp.headers["Allow"]


async def test_envelope_must_reference_only_complete_blobs(
    client: TestClient[Any, Any], alice: dict[str, str]
) -> None:
    sha = "ab" * 32
    err = await _error(
        await _post(client, alice, envelope_body(attachments=[sha])), 422, "attachment_missing"
    )
    assert err["missing"] == [sha]


async def test_fifty_phones_at_once_share_commits(
    client: TestClient[Any, Any], seeded_store: Store
) -> None:
    headers = await sign_in(client)
    before_batches, before_items = seeded_store.batches, seeded_store.items

    async def phone(i: int) -> int:
        body = envelope_body("act-1" if i % 2 else "act-2", seq=i // 2 + 1)
        return (await _post(client, headers, body)).status

    # seq order matters per activity: post per activity in order, activities in parallel
    async def activity_run(parity: int) -> list[int]:
        return [await phone(i) for i in range(parity, 50, 2)]

    runs = await asyncio.gather(activity_run(0), activity_run(1))
    assert runs[0] + runs[1] == [201] * 50
    assert (await _post(client, headers, envelope_body("act-1", seq=26))).status == 201
    ids = [str(uuid.uuid4()) for _ in range(50)]
    results = await asyncio.gather(
        *(_post(client, headers, envelope_body("act-2", seq=26, envelope_id=i)) for i in ids)
    )
    # exactly one of fifty racing posts for the same seq wins; the rest get 409
    assert sorted(r.status for r in results) == [201] + [409] * 49
    assert seeded_store.items - before_items >= 101
    assert seeded_store.batches - before_batches < seeded_store.items - before_items
