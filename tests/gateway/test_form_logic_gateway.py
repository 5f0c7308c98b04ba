"""The gateway checks a completed envelope against its form's logic and refuses a broken one with the form's message."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.store import Store
from gateway.store.activities import upsert_activity
from outpost.forms import FormDefinition
from tests.gateway.conftest import DISPATCHED_AT, activity
from tests.support.store_tasks import SqlWrite

CASES = json.loads(
    (Path(__file__).parents[1] / "data" / "form_logic_conformance.json").read_text("utf-8")
)
FORM = FormDefinition.model_validate(CASES["forms"]["inspection"])
GOOD = {
    "site_ok": "yes",
    "has_power": "yes",
    "reading": 230.5,
    "done": True,
    "total": "2.5",
    "rows_count": "1",
    "summary": "parts: 1, total 2.5",
}
ROWS = {"parts": [{"part": "hinge", "amount": 2.5, "line": "1"}]}


def _body(seq: int, record: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    return {
        "envelope_id": str(uuid.uuid4()),
        "activity_id": "act-logic",
        "seq": seq,
        "base_version": 3,
        "status": status,
        "created_at": datetime.now(UTC).isoformat(),
        "record": record,
        "tables": ROWS,
        "attachments": [],
        "form_version": 1,
    }


async def test_a_completed_envelope_that_breaks_the_logic_is_refused_with_its_message(
    client: TestClient[Any, Any], alice: dict[str, str], seeded_store: Store
) -> None:
    await seeded_store.async_write(
        SqlWrite(
            lambda conn: upsert_activity(
                conn, activity("act-logic", "alice", FORM), "alice", DISPATCHED_AT
            )
        )
    )
    url = "/api/v1/envelopes"
    for record, says in (
        ({**GOOD, "reading": 600}, "A reading is between 0 and 500."),
        ({**GOOD, "site_ok": "no"}, "Describe the hazard."),
        ({**GOOD, "hazard": "kept although hidden"}, "is not asked here"),
        ({**GOOD, "total": "99"}, "the value its calculation gives"),
    ):
        resp = await client.post(url, json=_body(1, record), headers=alice)
        text = await resp.text()
        assert resp.status == 422, text
        error = json.loads(text)["error"]
        assert error["code"] == "invalid_submission"
        assert says in error["message"], error
    # A draft may break a required-if, not a constraint.
    resp = await client.post(url, json=_body(1, {"site_ok": "no"}, "draft"), headers=alice)
    assert resp.status == 201, await resp.text()
    resp = await client.post(url, json=_body(2, GOOD), headers=alice)
    assert resp.status == 201, await resp.text()
