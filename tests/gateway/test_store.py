"""The store engine: pragmas, group commit, savepoints, readers, migrations, corruption."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, MetaData, func, insert, select, text

from gateway.store import Store, StoreClosedError, StoreError, migration, schema
from gateway.store.engine import LoopAccessError
from gateway.store.meta import get_meta, set_meta
from gateway.store.schema import meta, metadata
from outpost.times import utcnow
from tests.support.store_tasks import SqlRead, SqlWrite


def _put(key: str, value: str) -> Any:
    def work(conn: Connection) -> str:
        set_meta(conn, key, value)
        return key

    return work


async def test_pragmas_on_every_connection(store: Store) -> None:
    def pragmas(conn: Connection) -> dict[str, Any]:
        return {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in (
                "journal_mode",
                "synchronous",
                "foreign_keys",
                "busy_timeout",
                "query_only",
            )
        }

    read = await store.async_read(SqlRead(pragmas))
    assert read == {
        "journal_mode": "wal",
        "synchronous": 2,  # FULL
        "foreign_keys": 1,
        "busy_timeout": 10_000,
        "query_only": 1,
    }
    written = await store.async_write(SqlWrite(pragmas))
    assert written["synchronous"] == 2 and written["query_only"] == 0
    assert written["journal_mode"] == "wal"


async def test_concurrent_writes_share_commits(store: Store) -> None:
    before = store.batches
    keys = await asyncio.gather(
        *(store.async_write(SqlWrite(_put(f"k{i}", "v"))) for i in range(200))
    )
    assert keys == [f"k{i}" for i in range(200)]
    batches = store.batches - before
    assert batches < 200, "200 concurrent writes should share commits"
    count = await store.async_read(
        SqlRead(lambda c: c.execute(select(func.count()).select_from(meta)).scalar_one())
    )
    assert count == 200


async def test_busy_pause_from_config_still_commits_everything(tmp_path: Path) -> None:
    from gateway.app import store_for
    from tests.gateway.conftest import make_gateway_config

    config = make_gateway_config(tmp_path / "gw", store={"busy_pause_ms": 5})
    s = await store_for(config).async_open()
    try:
        assert s.busy_pause_s == 0.005
        keys = await asyncio.gather(
            *(s.async_write(SqlWrite(_put(f"p{i}", "v"))) for i in range(100))
        )
        assert len(keys) == 100
        count = await s.async_read(
            SqlRead(lambda c: c.execute(select(func.count()).select_from(meta)).scalar_one())
        )
        assert count == 100
    finally:
        await s.async_close()


async def test_one_failing_item_does_not_poison_its_batch(store: Store) -> None:
    def bad(conn: Connection) -> None:
        set_meta(conn, "bad", "half-written")
        raise ValueError("refused")

    results = await asyncio.gather(
        store.async_write(SqlWrite(_put("a", "1"))),
        store.async_write(SqlWrite(bad)),
        store.async_write(SqlWrite(_put("b", "2"))),
        return_exceptions=True,
    )
    assert results[0] == "a" and results[2] == "b"
    assert isinstance(results[1], ValueError)
    values = await store.async_read(
        SqlRead(lambda c: {k: get_meta(c, k) for k in ("a", "b", "bad")})
    )
    assert values == {"a": "1", "b": "2", "bad": None}


async def test_ack_means_committed_on_disk(store: Store) -> None:
    await store.async_write(SqlWrite(_put("durable", "yes")))
    # An independent connection (another process would see the same) finds it.
    conn = sqlite3.connect(store.path)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key='durable'").fetchone()
    finally:
        conn.close()
    assert row == ("yes",)


async def test_commit_listener_runs_in_the_loop_after_commit(store: Store) -> None:
    seen = asyncio.Event()
    loop_thread: list[threading.Thread] = []

    def listener() -> None:
        loop_thread.append(threading.current_thread())
        seen.set()

    remove = store.add_commit_listener(listener)
    await store.async_write(SqlWrite(_put("x", "1")))
    await asyncio.wait_for(seen.wait(), 5)
    assert loop_thread[0] is threading.current_thread()
    remove()


async def test_reads_do_not_wait_for_writes(store: Store) -> None:
    release = threading.Event()
    started = threading.Event()

    def slow_write(conn: Connection) -> None:
        set_meta(conn, "slow", "1")
        started.set()
        release.wait(10)

    await store.async_write(SqlWrite(_put("before", "1")))
    write = asyncio.ensure_future(store.async_write(SqlWrite(slow_write)))
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
    # The writer holds an open write transaction; a read still answers at once
    # with the last committed state.
    value = await asyncio.wait_for(
        store.async_read(SqlRead(lambda c: (get_meta(c, "before"), get_meta(c, "slow")))), 2
    )
    assert value == ("1", None)
    release.set()
    await write


async def test_database_access_from_the_loop_fails_loudly(store: Store) -> None:
    assert store._reader is not None
    with pytest.raises(LoopAccessError), store._reader.connect() as conn:
        conn.execute(text("SELECT 1"))
    with pytest.raises(RuntimeError):
        store.write_sync(SqlWrite(_put("nope", "1")))


async def test_closed_store_refuses_work(gateway_config: Any) -> None:
    from gateway.app import store_for

    s = await store_for(gateway_config).async_open()
    await s.async_write(SqlWrite(_put("a", "1")))
    await s.async_close()
    with pytest.raises(StoreClosedError):
        await s.async_write(SqlWrite(_put("b", "1")))
    with pytest.raises(StoreClosedError):
        await s.async_read(SqlRead(lambda c: get_meta(c, "a")))


def test_fresh_file_has_latest_schema_and_the_tables_the_code_uses(tmp_path: Path) -> None:
    s = Store(tmp_path / "g.db").open()
    try:

        def shape(conn: Connection) -> dict[str, list[tuple[str, str, bool]]]:
            names = conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"
            ).scalars()
            return {
                name: [
                    (r[1], r[2], bool(r[3]))
                    for r in conn.exec_driver_sql(f"PRAGMA table_info({name})").all()
                ]
                for name in names
            }

        found = s.read_sync(SqlRead(shape))
        version = s.read_sync(SqlRead(lambda c: c.exec_driver_sql("PRAGMA user_version").scalar()))
    finally:
        s.close()
    assert version == migration.LATEST
    # Every table a file gets is one the code can use, column for column.
    assert sorted(found) == sorted(schema.OVERRIDES) == sorted(metadata.tables)
    for table in metadata.sorted_tables:
        columns = [(c.name, c.type.compile(), not c.nullable) for c in table.columns]
        assert found[table.name] == [(n, t.replace(" ", ""), nn) for n, t, nn in columns]


def test_a_table_the_code_uses_must_come_from_a_migration() -> None:
    # Without step 3 there is no envelope_attachments table: the code's tables
    # cannot be built (at import), rather than a query failing in the field.
    steps = [m for m in migration.MIGRATIONS if m[0] != 3]
    tables = {"meta": {}, "envelope_attachments": {}}
    with pytest.raises(schema.SchemaError, match=r"'envelope_attachments'.*no migration"):
        schema.reflect(MetaData(), tables, steps)
    assert set(schema.reflect(MetaData(), tables)) == set(tables)


def test_an_override_must_name_a_column_a_migration_creates() -> None:
    steps = [m for m in migration.MIGRATIONS if m[0] != 5]  # no review columns
    with pytest.raises(schema.SchemaError, match=r"activities\.reopen_seq"):
        schema.reflect(MetaData(), schema.OVERRIDES, steps)
    with pytest.raises(schema.SchemaError, match=r"meta\.typo"):
        schema.reflect(MetaData(), {"meta": {"typo": schema.UTC_TIME}})


def test_every_timestamp_column_reads_back_as_an_aware_datetime() -> None:
    # Timestamps are VARCHAR(32) in the steps; one without its override would
    # read back as a str.
    for table in metadata.sorted_tables:
        for column in table.columns:
            if column.type.compile() == "VARCHAR(32)":
                assert isinstance(column.type, schema.UtcDateTime), f"{table.name}.{column.name}"
    assert isinstance(schema.envelopes.c.received_at.type, schema.UtcDateTime)
    assert schema.envelopes.c.attempts.default is not None
    assert schema.envelopes.c.attempts.default.arg == 0  # type: ignore[attr-defined]


def test_migration_backs_up_then_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "g.db"
    s = Store(path).open()
    s.write_sync(SqlWrite(_put("keep", "me")))
    s.close()

    def step_2(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE meta ADD COLUMN note TEXT")

    old = migration.LATEST
    new = old + 1
    monkeypatch.setattr(migration, "MIGRATIONS", [*migration.MIGRATIONS, (new, "add note", step_2)])
    monkeypatch.setattr(migration, "LATEST", new)
    caplog.set_level("INFO", logger="gateway.store.migration")
    assert migration.prepare(path) == old
    backups = list(tmp_path.glob(f"g.db.v{old}-*.bak"))
    assert len(backups) == 1
    conn = sqlite3.connect(backups[0])
    assert conn.execute("SELECT value FROM meta WHERE key='keep'").fetchone() == ("me",)
    conn.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (new,)
    assert conn.execute("SELECT value, note FROM meta").fetchall() == [("me", None)]
    conn.close()
    assert "migrating" in caplog.text and "add note" in caplog.text


def test_failed_migration_step_leaves_the_old_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "g.db"
    Store(path).open().close()

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE meta ADD COLUMN half TEXT")
        raise sqlite3.OperationalError("step failed")

    old = migration.LATEST
    monkeypatch.setattr(
        migration, "MIGRATIONS", [*migration.MIGRATIONS, (old + 1, "broken", broken)]
    )
    monkeypatch.setattr(migration, "LATEST", old + 1)
    with pytest.raises(StoreError, match="step failed"):
        migration.prepare(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (old,)
    assert "half" not in [r[1] for r in conn.execute("PRAGMA table_info(meta)")]
    conn.close()


def test_corrupt_file_is_moved_aside_not_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "g.db"
    path.write_bytes(b"this is not a database" * 100)
    s = Store(path).open()
    try:
        s.write_sync(SqlWrite(_put("fresh", "1")))
    finally:
        s.close()
    aside = list(tmp_path.glob("g.db.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes().startswith(b"this is not a database")
    assert "unusable" in caplog.text


def test_newer_schema_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={migration.LATEST + 5}")
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(StoreError, match="newer than this gateway supports"):
        Store(path).open()


class _Fatal(BaseException):
    pass


async def test_a_dead_writer_refuses_work_instead_of_hanging(
    gateway_config: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from gateway.app import store_for

    s = await store_for(gateway_config).async_open()
    try:

        def fatal(conn: Connection) -> None:
            raise _Fatal

        with pytest.raises(_Fatal):
            await asyncio.wait_for(s.async_write(SqlWrite(fatal)), 10)
        assert s._thread is not None
        await asyncio.to_thread(s._thread.join, 10)
        assert not s.is_healthy()
        with pytest.raises(StoreClosedError):
            await s.async_write(SqlWrite(_put("a", "1")))
        assert "store writer thread stopped" in caplog.text
    finally:
        await s.async_close()


def test_write_sync_from_a_thread(tmp_path: Path) -> None:
    s = Store(tmp_path / "g.db").open()
    try:
        assert s.write_sync(
            SqlWrite(lambda c: c.execute(insert(meta).values(key="t", value="1")).rowcount)
        )
        with pytest.raises(ValueError):
            s.write_sync(SqlWrite(lambda c: (_ for _ in ()).throw(ValueError("x"))))
        assert s.read_sync(SqlRead(lambda c: get_meta(c, "t"))) == "1"
        assert utcnow().tzinfo is not None
    finally:
        s.close()


def test_the_completed_check_uses_an_index(tmp_path: Path) -> None:
    """Every submission asks whether its activity is completed: it must not scan."""
    from gateway.store.submissions import _RAW_ACTIVITY

    Store(tmp_path / "g.db").open().close()
    conn = sqlite3.connect(tmp_path / "g.db")
    plan = [
        row[3]
        for row in conn.execute(
            "EXPLAIN QUERY PLAN " + _RAW_ACTIVITY.sql, [None] * len(_RAW_ACTIVITY.names)
        )
    ]
    conn.close()
    assert any("ix_envelopes_activity_status" in step for step in plan), plan


def test_migration_3_links_stored_envelopes_to_their_attachments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "g.db"
    with monkeypatch.context() as m:
        m.setattr(migration, "MIGRATIONS", migration.MIGRATIONS[:2])
        m.setattr(migration, "LATEST", 2)
        migration.prepare(path)
    conn = sqlite3.connect(path)
    at = "2026-11-23T09:00:00.000000Z"
    conn.execute(
        "INSERT INTO activities VALUES ('a1','t','x','{}',1,'ana',1,'ana',?,'offline',"
        "NULL,NULL,NULL,?)",
        (at, at),
    )
    for eid, shas in (("e1", ["a" * 64, "b" * 64]), ("e2", []), ("e3", ["a" * 64])):
        body = json.dumps({"attachments": shas})
        conn.execute(
            "INSERT INTO envelopes VALUES (?,'a1','ana',?,'draft',1,?,?,1,?,'h',1,'stored',"
            "NULL,NULL,NULL,NULL,NULL,0)",
            (eid, int(eid[1]), at, at, body),
        )
    conn.commit()
    conn.close()
    assert migration.prepare(path) == 2
    conn = sqlite3.connect(path)
    links = conn.execute("SELECT envelope_id, sha256 FROM envelope_attachments ORDER BY 1, 2")
    assert links.fetchall() == [("e1", "a" * 64), ("e1", "b" * 64), ("e3", "a" * 64)]
    conn.close()
