"""The kinds of work the store runs: typed tasks with ``run(conn) -> T``.

Every piece of gateway SQL is one small frozen dataclass in a module of
``gateway/store/`` named for what it holds (``submissions``, ``activities``,
``outbox``, ``sessions``, ``attachments``, ``maintenance`` …): its fields are
the arguments, ``run`` does the work on the connection it is given and
returns the caller's answer. The rest of the gateway only builds tasks and
hands them to the store::

    await store.async_write(UpsertActivity(activity, holder, now))
    found = await store.async_read(ListActivities(username))

A ``WriteTask`` runs in the writer thread inside one shared transaction (group
commit: one COMMIT per batch; the caller's await returns after it). Whether
it needs a SAVEPOINT of its own is a property of its *type*, not of a call:

- ``savepoint = True`` (the default): the writer wraps ``run`` in a SAVEPOINT,
  so an exception undoes exactly this task's writes and fails only its
  caller; its batch-mates commit.
- ``savepoint = False``: two statements less per item, for the hot path. The
  type promises to raise only *before* its first write; the writer checks
  that promise (SQLite's change counter) and, should a task break it, rolls
  the whole batch back and fails every caller in it (a bug, logged), rather
  than committing half a task.

A ``ReadTask`` runs on a reader connection in the read pool (WAL: it sees
the last commit and never waits for the writer).
"""

from __future__ import annotations

import abc
from typing import ClassVar, Generic, TypeVar

from sqlalchemy import Connection

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class WriteTask(abc.ABC, Generic[T_co]):
    """Work for the writer thread, committed with its batch."""

    __slots__ = ()

    # Run inside a SAVEPOINT of its own (see the module docstring).
    savepoint: ClassVar[bool] = True

    @abc.abstractmethod
    def run(self, conn: Connection) -> T_co:
        """Do the work on the writer's connection (inside the batch's transaction)."""


class RefusesBeforeWriting(WriteTask[T_co]):
    """A write task that raises only before its first write: it needs no SAVEPOINT."""

    __slots__ = ()

    savepoint: ClassVar[bool] = False


class ReadTask(abc.ABC, Generic[T_co]):
    """Work for a reader connection (read-only, the last committed state)."""

    __slots__ = ()

    @abc.abstractmethod
    def run(self, conn: Connection) -> T_co:
        """Read on a reader connection."""


class TaskContractError(RuntimeError):
    """A ``savepoint = False`` task raised after it had written (its batch is rolled back)."""
