"""The wire contract's extremes fit the central schema on SQLite and PostgreSQL.

``outpost.wire.schemas`` bounds every value so that what a gateway accepts
central can store; this writes the largest values the contract allows into
the real columns they land in (PostgreSQL's ``INTEGER`` is 32-bit, its text
holds no NUL, its timestamps have a range), so a widened bound fails here.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from cloud_bridge.db import Database
from cloud_bridge.models import Activity, ActivityType, LedgerEntry, Record, RecordRow, User
from outpost.wire.schemas import (
    INT32_MAX,
    INT64_MAX,
    MAX_JSON_DEPTH,
    MAX_JSON_TEXT,
    MAX_SEQ,
    MAX_TIME,
    MIN_TIME,
    EnvelopeBody,
)


def _extreme_body() -> EnvelopeBody:
    deep: object = "x" * 10
    for _ in range(MAX_JSON_DEPTH - 2):
        deep = [deep]
    return EnvelopeBody.model_validate(
        {
            "envelope_id": str(uuid.uuid4()),
            "activity_id": "a" * 64,
            "seq": MAX_SEQ,
            "base_version": INT32_MAX,
            "form_version": INT32_MAX,
            "status": "completed",
            "created_at": "0001-01-02T01:00:00+01:00",
            "record": {
                "k" * 128: INT64_MAX,
                "small": -(2**63),
                "text": "é" * MAX_JSON_TEXT,
                "deep": deep,
                "float": 1.7976931348623157e308,
            },
            "tables": {"t" * 64: [{"n": INT64_MAX}]},
        }
    )


def test_the_largest_envelope_the_contract_allows_fits_central(db: Database) -> None:
    body = _extreme_body()
    with db.session() as s:
        s.add(User(username="u" * 64, password_hash="h" * 512, offline=True))
        s.add(ActivityType(name="t" * 64, form={}, form_version=INT32_MAX))
        s.flush()
        s.add(
            Activity(
                id=body.activity_id,
                title="t" * 300,
                type="t" * 64,
                responsible="u" * 64,
                version=INT32_MAX,
                checkout_no=INT32_MAX,
                last_seq=MAX_SEQ,
                approved_at=MAX_TIME,
            )
        )
        s.flush()
        s.add(
            Record(
                activity_id=body.activity_id,
                data=body.record,
                envelope_id=str(body.envelope_id),
                seq=body.seq,
                status=body.status,
                attachments=[],
                form_version=INT32_MAX,
            )
        )
        for name, rows in body.tables.items():
            for i, row in enumerate(rows):
                s.add(
                    RecordRow(activity_id=body.activity_id, table_name=name, row_index=i, data=row)
                )
        s.add(
            LedgerEntry(
                envelope_id=str(body.envelope_id),
                gateway_id="g" * 64,
                activity_id=body.activity_id,
                checkout_no=INT32_MAX,
                seq=body.seq,
                base_version=body.base_version,
                status=body.status,
                author="u" * 64,
                form_version=INT32_MAX,
                outcome="applied",
                code="c" * 64,
                reason="r" * 2000,
                created_at=body.created_at,
                received_at=datetime(9999, 12, 29, 23, 0, tzinfo=UTC).astimezone(),
                applied_at=MAX_TIME,
                activity_version=INT32_MAX,
                payload=body.model_dump(mode="json"),
            )
        )
    with db.session() as s:
        entry = s.get(LedgerEntry, str(body.envelope_id))
        assert entry is not None
        assert entry.base_version == INT32_MAX
        assert entry.created_at == MIN_TIME  # the same instant, read back in UTC
        record = s.get(Record, body.activity_id)
        assert record is not None and record.data == body.record
