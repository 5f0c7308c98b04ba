"""Raw SQL as store tasks, for tests and benchmarks only.

The gateway itself hands the store only its named tasks (``gateway/store/``);
a test that seeds or inspects a database with its own SQL wraps it here:
``store.write_sync(SqlWrite(lambda c: ...))``, ``await store.async_read(SqlRead(fn))``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Connection

from gateway.store.tasks import ReadTask, RefusesBeforeWriting, WriteTask

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SqlWrite(WriteTask[T]):
    """``fn(conn)`` in the writer, inside its own savepoint."""

    fn: Callable[[Connection], T]

    def run(self, conn: Connection) -> T:
        return self.fn(conn)


@dataclass(frozen=True, slots=True)
class SqlWriteNoSavepoint(RefusesBeforeWriting[T]):
    """``fn(conn)`` in the writer with no savepoint (``fn`` must refuse before writing)."""

    fn: Callable[[Connection], T]

    def run(self, conn: Connection) -> T:
        return self.fn(conn)


@dataclass(frozen=True, slots=True)
class SqlRead(ReadTask[T]):
    """``fn(conn)`` on a reader connection."""

    fn: Callable[[Connection], T]

    def run(self, conn: Connection) -> T:
        return self.fn(conn)
