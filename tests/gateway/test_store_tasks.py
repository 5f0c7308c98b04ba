"""What a task's type promises the writer: savepoints, batch-mates, where it runs.

Each test holds the writer on a first task until the tasks under test are
all queued, so they share one batch (one COMMIT) for certain, and checks that
with ``store.batches``.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import threading
from collections.abc import Awaitable, Iterable
from typing import Any

import pytest
from sqlalchemy import Connection, func, select

import gateway.store
from gateway.api.errors import ApiError
from gateway.store import Store
from gateway.store.meta import get_meta, set_meta
from gateway.store.schema import envelopes
from gateway.store.submissions import StoreEnvelope, body_hash
from gateway.store.tasks import ReadTask, RefusesBeforeWriting, TaskContractError, WriteTask
from outpost.times import utcnow
from outpost.wire.schemas import EnvelopeBody
from tests.gateway.conftest import envelope_body
from tests.support.store_tasks import SqlRead, SqlWrite, SqlWriteNoSavepoint


def _put(key: str, value: str) -> Any:
    def work(conn: Connection) -> str:
        set_meta(conn, key, value)
        return key

    return work


async def _one_batch(
    store: Store, tasks: Iterable[WriteTask[Any]], *, commits: bool = True
) -> list[Any]:
    """Run ``tasks`` in one batch of the writer; their results (or exceptions), in order.

    ``commits``: whether that batch is expected to commit (``store.batches``
    counts committed batches only).
    """
    started, release = threading.Event(), threading.Event()

    def hold(conn: Connection) -> None:
        started.set()
        release.wait(10)

    holding = asyncio.ensure_future(store.async_write(SqlWrite(hold)))
    assert await asyncio.to_thread(started.wait, 10)
    before, items_before = store.batches, store.items
    waiting: list[Awaitable[Any]] = [asyncio.ensure_future(store.async_write(t)) for t in tasks]
    await asyncio.sleep(0.05)  # every task is in the queue (the puts happen at once)
    release.set()
    await holding
    results = await asyncio.gather(*waiting, return_exceptions=True)
    committed = store.batches - before
    assert committed == (2 if commits else 1), "the held task's batch, then one for the others"
    assert store.items - items_before == 1 + (len(waiting) if commits else 0)
    return list(results)


async def _meta(store: Store, *keys: str) -> dict[str, str | None]:
    return await store.async_read(SqlRead(lambda c: {k: get_meta(c, k) for k in keys}))


async def test_a_failing_task_with_its_savepoint_fails_only_its_caller(store: Store) -> None:
    def half_then_raise(conn: Connection) -> None:
        set_meta(conn, "bad", "half-written")
        raise ValueError("refused after a write")

    results = await _one_batch(
        store, [SqlWrite(_put("a", "1")), SqlWrite(half_then_raise), SqlWrite(_put("b", "2"))]
    )
    assert results[0] == "a" and results[2] == "b"
    assert isinstance(results[1], ValueError)
    # Its savepoint undid exactly its own write; its batch-mates committed.
    assert await _meta(store, "a", "b", "bad") == {"a": "1", "b": "2", "bad": None}


async def test_a_no_savepoint_task_refusing_before_writing_fails_only_its_caller(
    store: Store,
) -> None:
    def refuse(conn: Connection) -> None:
        get_meta(conn, "anything")  # reads are fine
        raise ValueError("refused before any write")

    results = await _one_batch(
        store,
        [
            SqlWriteNoSavepoint(_put("x", "1")),
            SqlWriteNoSavepoint(refuse),
            SqlWriteNoSavepoint(_put("y", "2")),
        ],
    )
    assert results[0] == "x" and results[2] == "y"
    assert isinstance(results[1], ValueError)
    assert await _meta(store, "x", "y") == {"x": "1", "y": "2"}


async def test_a_no_savepoint_task_that_writes_then_raises_commits_nothing_of_its_batch(
    store: Store,
) -> None:
    """The promise broken: half a task must not commit, so nobody in its batch is acked."""

    def write_then_raise(conn: Connection) -> None:
        set_meta(conn, "half", "written")
        raise ValueError("too late to refuse")

    results = await _one_batch(
        store,
        [
            SqlWrite(_put("before", "1")),
            SqlWriteNoSavepoint(write_then_raise),
            SqlWrite(_put("after", "2")),
        ],
        commits=False,
    )
    assert all(isinstance(r, TaskContractError) for r in results), results
    assert isinstance(results[1].__cause__, ValueError)
    assert await _meta(store, "before", "half", "after") == {
        "before": None,
        "half": None,
        "after": None,
    }
    # The writer carries on: the next batch commits as usual.
    assert await store.async_write(SqlWrite(_put("later", "3"))) == "later"
    assert await _meta(store, "later") == {"later": "3"}


async def test_store_envelope_refusal_leaves_its_batch_mates_stored(seeded_store: Store) -> None:
    """The real hot-path task: no savepoint, and a refusal touches nobody else."""
    now = utcnow()

    def task(activity_id: str, seq: int) -> StoreEnvelope:
        body = EnvelopeBody.model_validate(envelope_body(activity_id, seq))
        return StoreEnvelope(body, body_hash(body), "alice", now)

    assert StoreEnvelope.savepoint is False
    results = await _one_batch(
        seeded_store,
        [task("act-1", 1), task("act-1", 7), task("act-2", 1), task("no-such-act", 1)],
    )
    assert results[0][1] is False and results[2][1] is False  # stored, not replayed
    assert isinstance(results[1], ApiError) and results[1].code == "seq_mismatch"
    assert isinstance(results[3], ApiError) and results[3].status == 404
    stored = await seeded_store.async_read(
        SqlRead(
            lambda c: sorted(
                (r.activity_id, r.seq)
                for r in c.execute(select(envelopes.c.activity_id, envelopes.c.seq))
            )
        )
    )
    assert stored == [("act-1", 1), ("act-2", 1)]


async def test_read_tasks_run_on_a_reader_and_write_tasks_on_the_writer(store: Store) -> None:
    def query_only(conn: Connection) -> int:
        return int(conn.exec_driver_sql("PRAGMA query_only").scalar_one())

    assert await store.async_read(SqlRead(query_only)) == 1
    assert await store.async_write(SqlWrite(query_only)) == 0


async def test_the_store_takes_only_tasks(store: Store) -> None:
    with pytest.raises(TypeError, match="WriteTask"):
        await store.async_write(lambda c: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ReadTask"):
        await store.async_read(lambda c: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="WriteTask"):
        await asyncio.to_thread(store.write_sync, SqlRead(lambda c: None))  # type: ignore[arg-type]
    count = await store.async_read(SqlRead(lambda c: c.execute(select(func.count())).scalar()))
    assert count == 1


def _task_types() -> list[type[Any]]:
    for info in pkgutil.iter_modules(gateway.store.__path__):
        importlib.import_module(f"gateway.store.{info.name}")
    found: list[type[Any]] = []
    pending: list[type[Any]] = [WriteTask, ReadTask]
    while pending:
        for sub in pending.pop().__subclasses__():
            pending.append(sub)
            if sub.__module__.startswith("gateway.store.") and sub is not RefusesBeforeWriting:
                found.append(sub)
    return found


def test_which_write_tasks_go_without_a_savepoint() -> None:
    """Skipping the savepoint is a claim about a type's code: each one is listed here."""
    tasks = _task_types()
    assert len(tasks) > 20  # every module's tasks were found
    without = {t.__name__ for t in tasks if issubclass(t, WriteTask) and not t.savepoint}
    assert without == {"StoreEnvelope"}
    for t in tasks:
        assert t.__dataclass_params__.frozen, f"{t.__name__}: a task is a frozen value"
        assert not (issubclass(t, WriteTask) and issubclass(t, ReadTask)), t.__name__
