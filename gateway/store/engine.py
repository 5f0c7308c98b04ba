"""SQLite engines for the store: every pragma in one connect listener.

Two engines open the same file: the writer's (one connection, ``BEGIN
IMMEDIATE``) and the readers' (a small pool, ``query_only``). pysqlite's own
transaction handling is switched off (``isolation_level=None``) and we emit
``BEGIN`` ourselves, so SAVEPOINTs work and nothing commits behind our back.

Any statement issued from a thread that runs an asyncio event loop raises:
database work belongs in the writer thread or the reader pool, never the loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import QueuePool, StaticPool

BUSY_TIMEOUT_MS = 10_000
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024


class LoopAccessError(RuntimeError):
    """Database access from the event loop thread (a bug: it would stall every request)."""


def _forbid_loop(*_args: Any) -> None:
    if asyncio._get_running_loop() is not None:
        raise LoopAccessError(
            "database access from the event loop; use store.async_read/async_write"
        )


def _make_engine(path: Path, synchronous: str, *, reader: bool, pool_size: int = 1) -> Engine:
    url = f"sqlite+pysqlite:///{path}"
    kwargs: dict[str, Any] = {}
    if reader:
        kwargs.update(poolclass=QueuePool, pool_size=pool_size, max_overflow=0, pool_timeout=30)
    else:
        kwargs.update(poolclass=StaticPool)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "isolation_level": None, "timeout": 10},
        **kwargs,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # All pragmas in one place (see docs/durability.md for the reasoning).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
            # Checkpoints stay PASSIVE (the default autocheckpoint): litestream
            # may be replicating this file, and TRUNCATE/RESTART would fight it.
            if reader:
                cur.execute("PRAGMA query_only=ON")
        finally:
            cur.close()

    begin_sql = "BEGIN" if reader else "BEGIN IMMEDIATE"

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin_sql)

    event.listen(engine, "before_cursor_execute", _forbid_loop)
    return engine


def writer_engine(path: Path, synchronous: str) -> Engine:
    return _make_engine(path, synchronous, reader=False)


def reader_engine(path: Path, synchronous: str, pool_size: int) -> Engine:
    return _make_engine(path, synchronous, reader=True, pool_size=pool_size)
