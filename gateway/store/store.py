"""The store engine: one writer thread with group commit, a pool of readers.

The work is typed tasks (``gateway/store/tasks.py``): one dataclass per kind
of work, each with ``run(conn)``, in the store module named for what it holds.

Writes: ``await store.async_write(task)`` queues a ``WriteTask`` for the
writer thread, which owns the only write connection. The writer takes every
item waiting (up to ``max_batch``), runs each in one shared transaction —
inside its own SAVEPOINT unless its type says it refuses only before its
first write (``savepoint = False``) — and COMMITs once; each caller's
future resolves only after that COMMIT returned, so an acknowledgement means
"on disk" (with ``synchronous=FULL``). One failing item rolls back to its
savepoint and fails only its own caller. Fifty concurrent submissions share
one fsync instead of queueing behind fifty.

Reads: ``await store.async_read(task)`` runs a ``ReadTask`` on a reader
connection in a small thread pool; WAL readers see the last committed state
and never wait for the writer.

After each committed batch the commit listeners run in the event loop
(the uplink uses that to start draining at once).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from gateway.store import migration
from gateway.store.engine import reader_engine, writer_engine
from gateway.store.tasks import ReadTask, TaskContractError, WriteTask

logger = logging.getLogger(__name__)

T = TypeVar("T")
DB_FILENAME = "gateway.db"


class StoreClosedError(RuntimeError):
    """The store is closed (the gateway is shutting down)."""


@dataclass(slots=True)
class _WorkItem:
    fn: Callable[[Connection], Any]  # the task's bound ``run``
    loop: asyncio.AbstractEventLoop | None  # None: a blocking caller (write_sync)
    future: asyncio.Future[Any] | concurrent.futures.Future[Any]
    savepoint: bool = True  # the task type's ``savepoint``


_STOP = object()


def _settle(
    future: asyncio.Future[Any] | concurrent.futures.Future[Any], ok: bool, value: Any
) -> None:
    if future.done():  # the caller was cancelled; the work is committed anyway
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _deliver(settled: list[tuple[Any, bool, Any]], listeners: list[Callable[[], None]]) -> None:
    """In the loop: resolve a batch's futures, then tell the commit listeners."""
    for future, ok, value in settled:
        _settle(future, ok, value)
    for callback in listeners:
        try:
            callback()
        except Exception:  # a listener's bug must not stop acknowledgements
            logger.exception("commit listener %r failed", callback)


class Store:
    """The gateway's durable store (``data_dir/gateway.db``)."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        queue_size: int = 10_000,
        max_batch: int = 256,
        readers: int = 4,
        busy_pause_s: float = 0.0,
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.max_batch = max_batch
        self.busy_pause_s = busy_pause_s
        self._queue_size = queue_size
        self._readers = readers
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()  # C, lock-light
        self._slots: asyncio.Semaphore | None = None
        self._writer: Engine | None = None
        self._reader: Engine | None = None
        self._read_pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._listeners: list[tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = []
        self._closed = True
        self._writer_dead = False
        self._busy_since: float | None = None  # monotonic start of the batch in hand
        self.batches = 0  # committed batches (for metrics and tests)
        self.items = 0  # committed work items

    # --- lifecycle (blocking: call from a thread or before the loop runs) ---

    def open(self) -> Store:
        """Prepare the file (health check, migrations), start the writer thread."""
        if not self._closed:
            return self
        migration.prepare(self.path)
        self._writer = writer_engine(self.path, self.synchronous)
        self._reader = reader_engine(self.path, self.synchronous, self._readers)
        self._read_pool = ThreadPoolExecutor(self._readers, thread_name_prefix="outpost-store-read")
        self._closed = False
        self._writer_dead = False
        self._thread = threading.Thread(target=self._run_writer, name="outpost-store-writer")
        self._thread.start()
        logger.info("store open: %s (synchronous=%s)", self.path, self.synchronous)
        return self

    def close(self) -> None:
        """Finish queued writes, stop the writer, close every connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join()
        if self._read_pool is not None:
            self._read_pool.shutdown(wait=True)
        for engine in (self._writer, self._reader):
            if engine is not None:
                engine.dispose()
        logger.info("store closed: %s", self.path)

    async def async_open(self) -> Store:
        await asyncio.get_running_loop().run_in_executor(None, self.open)
        return self

    async def async_close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    @property
    def is_open(self) -> bool:
        return not self._closed

    def is_healthy(self, stuck_after_s: float = 30.0) -> bool:
        """Loop-safe, no IO: the writer thread runs and no batch has hung for ``stuck_after_s``.

        A failing commit (e.g. a full disk) is not "unhealthy": a restart would
        not fix it. A dead or hung writer is (systemd's watchdog restarts us).
        """
        if self._closed or self._thread is None or not self._thread.is_alive():
            return False
        since = self._busy_since
        return since is None or time.monotonic() - since < stuck_after_s

    # --- loop API ---------------------------------------------------------

    async def async_write(self, task: WriteTask[T]) -> T:
        """Run ``task`` in the writer thread; return what it returned, after COMMIT."""
        if self._closed or self._writer_dead:
            raise StoreClosedError("the store is closed")
        loop = asyncio.get_running_loop()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._queue_size)
        fn, savepoint = _writer_work(task)
        async with self._slots:  # bounded: callers wait for room, nothing is dropped
            future: asyncio.Future[T] = loop.create_future()
            self._queue.put(_WorkItem(fn, loop, future, savepoint))
            # No shield: a cancelled caller just stops waiting; the work still commits
            # (``_settle`` skips a future that is already done).
            return await future

    async def async_read(self, task: ReadTask[T]) -> T:
        """Run ``task`` on a reader connection in the read pool."""
        if self._closed or self._read_pool is None:
            raise StoreClosedError("the store is closed")
        fn = _reader_work(task)
        return await asyncio.get_running_loop().run_in_executor(self._read_pool, self._read, fn)

    def add_commit_listener(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` in the loop after each committed batch; returns a remover."""
        entry = (asyncio.get_running_loop(), callback)
        self._listeners.append(entry)

        def remove() -> None:
            if entry in self._listeners:
                self._listeners.remove(entry)

        return remove

    # --- blocking helpers (threads only) ------------------------------------

    def read_sync(self, task: ReadTask[T]) -> T:
        """Run a read from a plain thread (CLI tools, tests outside the loop)."""
        return self._read(_reader_work(task))

    def write_sync(self, task: WriteTask[T]) -> T:
        """Blocking ``async_write`` for plain threads (seeding, tools); never from the loop."""
        if self._closed or self._writer_dead:
            raise StoreClosedError("the store is closed")
        if asyncio._get_running_loop() is not None:
            raise RuntimeError("write_sync from the event loop; use await store.async_write")
        fn, savepoint = _writer_work(task)
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put(_WorkItem(fn, None, future, savepoint))
        return future.result()

    def _read(self, fn: Callable[[Connection], T]) -> T:
        assert self._reader is not None
        with self._reader.connect() as conn:
            return fn(conn)

    # --- the writer thread --------------------------------------------------

    def _run_writer(self) -> None:
        try:
            self._write_loop()
        except BaseException:
            # The writer is gone (it could not even connect, or a bug escaped
            # a batch): refuse new work loudly instead of letting callers hang.
            logger.exception("store writer thread stopped; the store refuses writes")
            self._writer_dead = True
        finally:
            self._refuse_queued()

    def _write_loop(self) -> None:
        assert self._writer is not None
        with self._writer.connect() as conn:
            stopping = False
            while not stopping:
                first = self._queue.get()
                if first is _STOP:
                    break
                batch: list[_WorkItem] = [first]
                while len(batch) < self.max_batch:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP:
                        stopping = True
                        break
                    batch.append(nxt)
                self._busy_since = time.monotonic()
                try:
                    self._commit_batch(conn, batch)
                finally:
                    self._busy_since = None
                if self.busy_pause_s and not stopping and not self._queue.empty():
                    # Back to back, litestream would rarely get its turn at the
                    # file (docs/replication.md); a short pause lets it in and
                    # lets the next batch gather more items for its fsync.
                    time.sleep(self.busy_pause_s)

    def _refuse_queued(self) -> None:
        """Anything queued after the stop (or a dead writer) is refused, not lost silently."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                self._call(item, False, StoreClosedError("the store is closed"))

    def _commit_batch(self, conn: Connection, batch: list[_WorkItem]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            with conn.begin():
                # SAVEPOINTs straight on the driver connection: SQLAlchemy's
                # begin_nested() costs ~100x more, per item, in the one thread
                # every acknowledgement waits on. Nested begin_nested() inside
                # an item still works (SQLite savepoints nest by name).
                raw = conn.connection.driver_connection
                assert raw is not None
                for item in batch:
                    if item.savepoint:
                        raw.execute("SAVEPOINT outpost_item")
                    else:
                        changes = raw.total_changes
                    try:
                        value = item.fn(conn)
                    except Exception as exc:  # one bad item fails only its own caller
                        if item.savepoint:
                            raw.execute("ROLLBACK TO outpost_item")
                            raw.execute("RELEASE outpost_item")
                        elif raw.total_changes != changes:
                            # It wrote, then raised, with no savepoint to undo it:
                            # committing the batch would keep half of it.
                            raise TaskContractError(
                                f"{_task_name(item.fn)} raised after writing, and its type "
                                "has no savepoint; the whole batch is rolled back"
                            ) from exc
                        outcomes.append((False, exc))
                    else:
                        if item.savepoint:
                            raw.execute("RELEASE outpost_item")
                        outcomes.append((True, value))
        except Exception as exc:  # the COMMIT failed (or a task broke its promise): nobody is acked
            logger.exception("store commit of %d item(s) failed", len(batch))
            for item in batch:
                self._call(item, False, exc)
            return
        except BaseException as exc:  # not ours to swallow: fail the batch, then stop
            for item in batch:
                self._call(item, False, exc)
            raise
        self.batches += 1
        self.items += len(batch)
        # One wake-up per loop per batch (not one per item): settle every
        # future of that loop, then run the commit listeners.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, bool, Any]]] = {}
        for item, (ok, value) in zip(batch, outcomes, strict=True):
            if item.loop is None:
                _settle(item.future, ok, value)
            else:
                by_loop.setdefault(item.loop, []).append((item.future, ok, value))
        listeners: dict[asyncio.AbstractEventLoop, list[Callable[[], None]]] = {}
        for loop, callback in list(self._listeners):
            listeners.setdefault(loop, []).append(callback)
        for loop in by_loop.keys() | listeners.keys():
            self._call_soon(loop, _deliver, by_loop.get(loop, []), listeners.get(loop, []))

    @staticmethod
    def _call(item: _WorkItem, ok: bool, value: Any) -> None:
        if item.loop is None:
            _settle(item.future, ok, value)
        else:
            Store._call_soon(item.loop, _settle, item.future, ok, value)

    @staticmethod
    def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # that loop is closed: nobody is waiting any more
            logger.debug("event loop closed; dropping a callback")


def _writer_work(task: WriteTask[T]) -> tuple[Callable[[Connection], T], bool]:
    """What the writer calls for ``task``, and whether inside a SAVEPOINT of its own."""
    if not isinstance(task, WriteTask):  # typed callers cannot; say so to untyped ones
        raise TypeError(f"the store's writer takes a WriteTask, not {type(task).__name__}")
    return task.run, type(task).savepoint


def _reader_work(task: ReadTask[T]) -> Callable[[Connection], T]:
    if not isinstance(task, ReadTask):
        raise TypeError(f"the store's readers take a ReadTask, not {type(task).__name__}")
    return task.run


def _task_name(fn: Callable[..., Any]) -> str:
    owner = getattr(fn, "__self__", None)
    return type(owner).__name__ if owner is not None else getattr(fn, "__qualname__", repr(fn))


def database_bytes(path: Path) -> int:
    """The database file plus its WAL on disk (blocking: call off the loop)."""
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(FileNotFoundError):
            total += Path(str(path) + suffix).stat().st_size
    return total


def open_store(data_dir: Path, **kwargs: Any) -> Store:
    """Open (blocking) the store at ``data_dir/gateway.db``."""
    return Store(Path(data_dir) / DB_FILENAME, **kwargs).open()
