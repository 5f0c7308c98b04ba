"""The central database engine: SQLite (embedded default) or PostgreSQL.

All database work is blocking and runs in the bridge's DB threads, never on
the event loop. On SQLite every transaction starts with ``BEGIN IMMEDIATE``
(pysqlite's own transaction handling loses read-then-write updates under
concurrency); PostgreSQL uses row locks (``SELECT … FOR UPDATE``) and
conditional updates.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000


class LoopAccessError(RuntimeError):
    """Blocking database work was started on the event loop's thread."""


_loop_threads: set[int] = set()


def mark_loop_thread() -> None:
    """Record the calling thread as an event loop thread (DB access there fails loudly)."""
    _loop_threads.add(threading.get_ident())


def unmark_loop_thread() -> None:
    _loop_threads.discard(threading.get_ident())


def _check_not_loop() -> None:
    if threading.get_ident() in _loop_threads:
        raise LoopAccessError("database access from the event loop; run it in the DB executor")


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def _prepare_sqlite_path(url: str) -> None:
    u = make_url(url)
    db = u.database
    if db and db != ":memory:" and not db.startswith("file:"):
        Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)


def create_central_engine(url: str, *, synchronous: str = "FULL", pool_size: int = 5) -> Engine:
    """An engine for ``url`` with the pragmas and transaction handling we rely on."""
    kwargs: dict[str, Any] = {}
    sqlite = url.startswith("sqlite")
    if sqlite:
        _prepare_sqlite_path(url)
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    else:
        kwargs["pool_size"] = pool_size
        kwargs["max_overflow"] = pool_size
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if sqlite:

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Autocommit at the driver; we emit BEGIN ourselves in the begin event.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            _check_not_loop()
            # A long read (an export) must not hold the write lock: a deferred
            # BEGIN reads a snapshot while replay keeps committing (WAL).
            if conn.get_execution_options().get("outpost_read_only"):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

    else:

        @event.listens_for(engine, "begin")
        def _on_begin_pg(_conn: Any) -> None:
            _check_not_loop()

    return engine


class Database:
    """The engine plus a session factory; sessions are used only in DB threads."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sqlite = is_sqlite(engine)
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Database:
        return cls(create_central_engine(url, **kwargs))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back on an exception."""
        with self._sessions() as session, session.begin():
            yield session

    def new_session(self) -> Session:
        return self._sessions()

    def dispose(self) -> None:
        self.engine.dispose()
