"""Writes tests/data/gateway-head5.db: a gateway database as schema 5's code left it.

Run with the gateway code of schema 5 first on the path (commit ee0c1a8, the
last one before step 6), so the file is what a gateway in the field holds
when it is upgraded, not what today's code imagines it held:

    git worktree add --detach /tmp/h5 ee0c1a8
    PYTHONPATH=/tmp/h5 .venv/bin/python tests/data/make_gateway_head5.py
    git worktree remove /tmp/h5

What it holds: users ana and bo; ``act-old`` (inspection, form version 1,
a draft stored), ``act-new`` (inspection, dispatched after version 2: its
form is version 2, a completed envelope queued), ``act-audit`` (another
type, version 4, nothing filled in). At schema 5 each activity holds only its
own form: version 1 and 2 of ``inspection`` both exist in the file only
because two activities were dispatched on either side of the change.
"""

# gateway.store.ops exists only in the schema-5 code this runs with (see above),
# so the import sorter takes it for a third-party module: keep the order by hand.
# ruff: noqa: I001

from __future__ import annotations

import sqlite3
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection

from gateway.store import migration
from gateway.store.ops import replace_users, upsert_activity
from gateway.store.store import Store
from gateway.store.submissions import body_hash, store_envelope
from outpost.forms import FormDefinition
from outpost.wire.schemas import ActivityWire, EnvelopeBody, UserPush, UserWire

OUT = Path(__file__).resolve().parent / "gateway-head5.db"
AT = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$" + "A" * 43


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


def wire(aid: str, type_name: str, version: int, limit: int, who: str) -> ActivityWire:
    return ActivityWire(
        id=aid,
        title=f"Inspect {aid}",
        type=type_name,
        form=form(limit),
        form_version=version,
        responsible=who,
        version=1,
    )


def body(aid: str, status: str, reading: float, version: int) -> EnvelopeBody:
    return EnvelopeBody.model_validate(
        {
            "envelope_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"outpost:{aid}:{status}")),
            "activity_id": aid,
            "seq": 1,
            "base_version": 1,
            "status": status,
            "created_at": "2026-11-30T09:00:00Z",
            "record": {"site": aid, "reading": reading},
            "form_version": version,
        }
    )


def main() -> None:
    assert migration.LATEST == 5, f"run with schema 5's code (found {migration.LATEST})"
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    store = Store(path).open()

    def work(conn: Connection) -> None:
        users = [UserWire(username=u, password_hash=HASH, offline=True) for u in ("ana", "bo")]
        replace_users(
            conn,
            UserPush(gateway_id="site-h5", users=users, offline_types=["inspection"], pushed_at=AT),
        )
        upsert_activity(conn, wire("act-old", "inspection", 1, 500, "ana"), "ana", AT)
        upsert_activity(conn, wire("act-new", "inspection", 2, 400, "bo"), "bo", AT)
        upsert_activity(conn, wire("act-audit", "audit", 4, 9, "ana"), "ana", AT)
        for aid, status, reading, version, who in (
            ("act-old", "draft", 450.0, 1, "ana"),
            ("act-new", "completed", 300.0, 2, "bo"),
        ):
            b = body(aid, status, reading, version)
            store_envelope(conn, b, body_hash(b), who, AT)

    store.write_sync(work)
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("VACUUM")
    conn.close()
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
