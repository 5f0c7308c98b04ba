"""Every form version the gateway was sent is kept; an envelope is checked against the one it names.

A draft begun on version 1 stays on version 1 after version 2 arrived (the
LAN API gives the crew's app that version's form), a new draft is on
version 2, an envelope naming a version the gateway never had is refused,
and the retention job forgets a version once nothing names it. A gateway
database left at schema 5 (``tests/data/gateway-head5.db``, written by the
schema-5 code) steps up to 6 with its data.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import uuid
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import delete, select, update

from gateway.store import Store
from gateway.store.activities import upsert_activity
from gateway.store.form_versions import PruneFormVersions
from gateway.store.queries import activity_detail
from gateway.store.schema import APPLIED, activities, envelopes, form_versions
from gateway.store.submissions import body_hash, store_envelope
from outpost.forms import FormDefinition
from outpost.times import utcnow
from outpost.wire.schemas import ActivityWire, EnvelopeBody
from tests.gateway.conftest import DISPATCHED_AT
from tests.support.store_tasks import SqlRead, SqlWrite

HEAD5 = Path(__file__).parents[1] / "data" / "gateway-head5.db"


def form(limit: int) -> FormDefinition:
    return FormDefinition.model_validate(
        {
            "fields": [
                {"name": "site", "type": "text", "required": True},
                {
                    "name": "reading",
                    "type": "number",
                    "constraint": f". >= 0 and . <= {limit}",
                    "constraint_message": f"A reading is between 0 and {limit}.",
                },
            ]
        }
    )


def meter_check(aid: str, version: int) -> ActivityWire:
    return ActivityWire(
        id=aid,
        title=aid,
        type="meter_check",
        form=form(500 if version == 1 else 400),
        form_version=version,
        responsible="alice",
        version=3,
    )


def body(aid: str, seq: int, status: str, reading: float, version: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "envelope_id": str(uuid.uuid4()),
        "activity_id": aid,
        "seq": seq,
        "base_version": 3,
        "status": status,
        "created_at": "2026-11-23T09:00:00Z",
        "record": {"site": aid, "reading": reading},
    }
    if version is not None:
        out["form_version"] = version
    return out


async def _dispatch(store: Store, *acts: ActivityWire) -> None:
    def work(conn: Any) -> None:
        for a in acts:
            upsert_activity(conn, a, "alice", DISPATCHED_AT, from_dispatch=True)

    await store.async_write(SqlWrite(work))


def _reading_limit(detail: dict[str, Any]) -> str:
    return str(detail["form"]["fields"][1]["constraint"])


async def test_a_draft_stays_on_the_version_it_was_begun_on(
    client: TestClient[Any, Any], alice: dict[str, str], seeded_store: Store
) -> None:
    await _dispatch(seeded_store, meter_check("act-v", 1))
    url = "/api/v1/envelopes"
    # 450 is a reading version 1 allows (<= 500) and version 2 does not (<= 400).
    resp = await client.post(url, json=body("act-v", 1, "draft", 450, 1), headers=alice)
    assert resp.status == 201, await resp.text()
    # Central changed the form: a refresh of act-v and a new activity, both on version 2.
    await _dispatch(seeded_store, meter_check("act-v", 2), meter_check("act-w", 2))

    async def detail(aid: str) -> dict[str, Any]:
        resp = await client.get(f"/api/v1/activities/{aid}", headers=alice)
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())

    old, new = await detail("act-v"), await detail("act-w")
    assert (old["form_version"], _reading_limit(old)) == (1, ". >= 0 and . <= 500")
    assert (new["form_version"], _reading_limit(new)) == (2, ". >= 0 and . <= 400")
    listed = await (await client.get("/api/v1/activities", headers=alice)).json()
    versions = {a["id"]: a["form_version"] for a in listed["activities"]}
    assert (versions["act-v"], versions["act-w"]) == (1, 2)  # as the detail says

    # The v1 draft completes under v1's rules; the same answer on v2 is refused with v2's message.
    resp = await client.post(url, json=body("act-v", 2, "completed", 450, 1), headers=alice)
    assert resp.status == 201, await resp.text()
    resp = await client.post(url, json=body("act-w", 1, "completed", 450, 2), headers=alice)
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_submission"
    assert "A reading is between 0 and 400." in error["message"]
    # An envelope naming no version is checked against the one the activity is filled on.
    resp = await client.post(url, json=body("act-w", 1, "completed", 450, None), headers=alice)
    assert resp.status == 422 and "between 0 and 400" in await resp.text()
    # A version this gateway never had.
    resp = await client.post(url, json=body("act-w", 1, "completed", 300, 7), headers=alice)
    assert resp.status == 409
    error = (await resp.json())["error"]
    assert error["code"] == "form_version" and error["form_version"] == 7
    assert (
        "does not have version 7 of the 'meter_check' form (it has 2 for this activity)"
        in (error["message"])
    )
    # Another activity sent another form as its version 1: each keeps what it was sent.
    other = meter_check("act-x", 1).model_copy(update={"form": form(10)})
    await _dispatch(seeded_store, other)
    assert _reading_limit(await detail("act-v")) == ". >= 0 and . <= 500"
    assert _reading_limit(await detail("act-x")) == ". >= 0 and . <= 10"

    stored = await seeded_store.async_read(
        SqlRead(
            lambda c: c.execute(
                select(envelopes.c.seq, envelopes.c.form_version, envelopes.c.body)
                .where(envelopes.c.activity_id == "act-v")
                .order_by(envelopes.c.seq)
            ).all()
        )
    )
    assert [(r.seq, r.form_version, json.loads(r.body)["form_version"]) for r in stored] == [
        (1, 1, 1),
        (2, 1, 1),
    ]


async def test_a_late_older_dispatch_does_not_take_new_drafts_back(seeded_store: Store) -> None:
    await _dispatch(seeded_store, meter_check("act-v", 2))
    await _dispatch(seeded_store, meter_check("act-v", 1))  # a redelivery of the first
    detail = await seeded_store.async_read(SqlRead(lambda c: activity_detail(c, "alice", "act-v")))
    assert detail is not None and detail["form_version"] == 2


async def test_retention_forgets_a_version_once_nothing_names_it(seeded_store: Store) -> None:
    await _dispatch(seeded_store, meter_check("act-v", 1))
    b = EnvelopeBody.model_validate(body("act-v", 1, "completed", 450, 1))
    await seeded_store.async_write(
        SqlWrite(lambda c: store_envelope(c, b, body_hash(b), "alice", utcnow()))
    )
    await _dispatch(seeded_store, meter_check("act-v", 2))

    def held(conn: Any) -> list[int]:
        return list(
            conn.execute(
                select(form_versions.c.form_version)
                .where(form_versions.c.activity_id == "act-v")
                .order_by(form_versions.c.form_version)
            ).scalars()
        )

    prune = PruneFormVersions()
    assert await seeded_store.async_write(prune) == 0  # the queued envelope names 1
    assert await seeded_store.async_read(SqlRead(held)) == [1, 2]
    await seeded_store.async_write(
        SqlWrite(lambda c: c.execute(update(envelopes).values(state=APPLIED)))
    )
    assert await seeded_store.async_write(prune) == 1
    assert await seeded_store.async_read(SqlRead(held)) == [2]  # act-v names 2 as its newest
    # The seeded activities' versions are untouched; an expired activity's go.
    assert await seeded_store.async_write(prune) == 0
    await seeded_store.async_write(
        SqlWrite(lambda c: c.execute(delete(activities).where(activities.c.id == "act-2")))
    )
    assert await seeded_store.async_write(prune) == 1


def test_a_schema_5_database_steps_up_with_its_forms(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    shutil.copy(HEAD5, path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (5,)
    conn.close()

    store = Store(path).open()
    try:
        assert list(tmp_path.glob("gateway.db.v5-*.bak")), "backed up before migrating"
        rows = store.read_sync(
            SqlRead(
                lambda c: c.execute(
                    select(
                        form_versions.c.activity_id,
                        form_versions.c.form_version,
                        form_versions.c.form,
                    ).order_by(form_versions.c.activity_id)
                ).all()
            )
        )
        assert [(r.activity_id, r.form_version) for r in rows] == [
            ("act-audit", 4),
            ("act-new", 2),
            ("act-old", 1),
        ]
        limits = {r.activity_id: json.loads(r.form)["fields"][1]["constraint"] for r in rows}
        assert limits["act-old"] == ". >= 0 and . <= 500"
        assert limits["act-new"] == ". >= 0 and . <= 400"
        old = store.read_sync(SqlRead(lambda c: activity_detail(c, "ana", "act-old")))
        assert old is not None and old["form_version"] == 1 and old["envelopes"] == 1
        # The draft stored at schema 5 completes under its own version's rules.
        b = EnvelopeBody.model_validate(body("act-old", 2, "completed", 450, 1))
        answer, replayed = store.write_sync(
            SqlWrite(lambda c: store_envelope(c, b, body_hash(b), "ana", utcnow()))
        )
        assert answer["state"] == "queued" and not replayed
    finally:
        store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (6,)
        columns = [r[1] for r in conn.execute("PRAGMA table_info(activities)")]
        assert "form" not in columns and "form_version" in columns
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM envelopes").fetchone() == (3,)
    finally:
        conn.close()
