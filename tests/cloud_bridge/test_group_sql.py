"""A group's writes (cloud_bridge/group_sql.py) store every value as given.

On PostgreSQL a column's values travel as one array parameter (text columns in
binary format); an envelope's body is whatever a crew typed, so quotes,
backslashes, braces, commas, the word NULL and non-Latin text must come back
byte for byte, on SQLite (executemany) alike.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import JSON, Boolean, Column, Integer, MetaData, String, Table, Text, select
from sqlalchemy.exc import DBAPIError

from cloud_bridge.db import Database
from cloud_bridge.group_sql import among, insert_rows, update_rows
from cloud_bridge.models import UTCDateTime

meta = MetaData()
things = Table(
    "group_sql_things",
    meta,
    Column("id", String(36), primary_key=True),
    Column("note", Text, nullable=True),
    Column("body", JSON, nullable=True),
    Column("flag", Boolean, nullable=True),
    Column("n", Integer, nullable=True),
    Column("at", UTCDateTime, nullable=True),
)

AWKWARD = [
    'say "hi"',
    'back\\slash \\\\ and \\"',
    '{braces}, commas, {"a":1}',
    "NULL",
    "",
    "ação — 测试 — 🚒",
    "line\nbreak\ttab",
    " leading and trailing ",
]
AT = datetime(2026, 12, 3, 9, 30, tzinfo=timezone(timedelta(hours=5)))


def rows() -> list[dict[str, Any]]:
    return [
        {
            "id": f"id-{i}",
            "note": text,
            "body": {"text": text, "list": [text, None, 1.5], "nested": {"k": text}},
            "flag": i % 2 == 0,
            "n": i * 1000,
            "at": AT + timedelta(minutes=i),
        }
        for i, text in enumerate(AWKWARD)
    ] + [{"id": "id-none", "note": None, "body": None, "flag": None, "n": None, "at": None}]


def stored(db: Database) -> dict[str, dict[str, Any]]:
    with db.engine.connect() as conn:
        return {r.id: dict(r._mapping) for r in conn.execute(select(things))}


def test_inserted_values_come_back_as_given(central_db_url: str) -> None:
    db = Database.from_url(central_db_url)
    meta.create_all(db.engine)
    try:
        with db.engine.begin() as conn:
            insert_rows(conn, things, rows())
        got = stored(db)
        for row in rows():
            want = dict(row)
            if want["at"] is not None:
                want["at"] = want["at"].astimezone(UTC)
            assert got[row["id"]] == want
    finally:
        db.dispose()


def test_updated_values_come_back_as_given_and_among_finds_them(central_db_url: str) -> None:
    db = Database.from_url(central_db_url)
    meta.create_all(db.engine)
    try:
        with db.engine.begin() as conn:
            insert_rows(conn, things, [{"id": r["id"], "note": "before"} for r in rows()])
            update_rows(
                conn,
                things,
                "id",
                [{"id": r["id"], "note": r["note"], "body": r["body"]} for r in rows()],
            )
        got = stored(db)
        for row in rows():
            assert (got[row["id"]]["note"], got[row["id"]]["body"]) == (row["note"], row["body"])
        with db.engine.connect() as conn:
            found = conn.execute(
                select(things.c.id).where(among(conn.dialect.name, things.c.note, "notes")),
                {"notes": AWKWARD[:4]},
            ).scalars()
            assert sorted(found) == ["id-0", "id-1", "id-2", "id-3"]
    finally:
        db.dispose()


def test_a_column_of_nulls_only_goes_in_and_a_number_past_its_column_fails(
    central_db_url: str,
) -> None:
    """A group whose rows all leave a column NULL (a ledger's ``code`` when nothing is
    refused) is the common case; a number past the column's range fails as before."""
    db = Database.from_url(central_db_url)
    meta.create_all(db.engine)
    blank = {"note": None, "body": None, "flag": None, "n": None, "at": None}
    try:
        with db.engine.begin() as conn:
            insert_rows(conn, things, [{"id": f"blank-{i}", **blank} for i in range(3)])
            update_rows(conn, things, "id", [{"id": "blank-1", **blank}])
        got = stored(db)
        assert [got[f"blank-{i}"] for i in range(3)] == [
            {"id": f"blank-{i}", **blank} for i in range(3)
        ]
        if db.engine.dialect.name == "postgresql":  # SQLite's INTEGER holds 64 bits
            with pytest.raises(DBAPIError, match="out of range"), db.engine.begin() as conn:
                insert_rows(conn, things, [{"id": "big", **blank, "n": 2**40}])
    finally:
        db.dispose()
