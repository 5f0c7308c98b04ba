"""Group commit: batches from many gateways applied together, one transaction per group.

One small batch per transaction costs a commit (an fsync) and a handful of
queries each; at a thousand gateways that is the bridge's whole core. So the
uplink handler hands each batch to a :class:`GroupCommitter`, whose replay
threads take what is queued, up to ``group_max_envelopes``, waiting up to
``group_wait_ms`` after the first batch for company when the queue is short,
and apply it as one group (:meth:`cloud_bridge.replay.Replayer.apply_group`).

* Each envelope is still all-or-nothing and exactly once (the ledger's key).
* A batch's results are handed back only after the group's commit returned,
  so an answer never leaves before its envelopes are durable.
* A gateway's batches are applied in the order they came: a thread never
  takes a batch of a gateway whose earlier batch another thread is applying.
* When the group's transaction fails, each batch is applied alone (poison
  isolation per batch, then per envelope): one gateway's bad envelope costs
  one rejection, not the others' batches.
* The queue is bounded (``queue_max_envelopes``): beyond it a batch is
  refused at once with :class:`Busy`, and the gateway is told to come back
  later rather than left waiting for an answer that is queued behind
  minutes of work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field

from cloud_bridge.bulk import Part
from cloud_bridge.metrics import BridgeMetrics
from cloud_bridge.replay import Replayer, Results

logger = logging.getLogger(__name__)


class Busy(Exception):
    """The replay queue is over its bound: come back after ``retry_after_s``."""

    def __init__(self, retry_after_s: float, queued: int) -> None:
        super().__init__(f"replay queue holds {queued} envelopes; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s
        self.queued = queued


@dataclass
class _Item:
    part: Part
    # Resolved in its caller's loop: one wakeup for all of a group's batches there.
    loop: asyncio.AbstractEventLoop
    waiter: asyncio.Future[Part]
    queued: float = field(default_factory=time.monotonic)


class GroupCommitter:
    """Replay threads that apply queued batches in groups (``async_apply``, from any loop)."""

    def __init__(
        self,
        replayer: Replayer,
        *,
        threads: int = 1,
        max_envelopes: int = 2000,
        wait_s: float = 0.003,
        queue_max_envelopes: int = 5000,
        retry_after_s: float = 10.0,
        metrics: BridgeMetrics | None = None,
    ) -> None:
        self.replayer = replayer
        self.max_envelopes = max_envelopes
        self.wait_s = wait_s
        self.queue_max_envelopes = queue_max_envelopes
        self.retry_after_s = retry_after_s
        self.metrics = metrics or BridgeMetrics()
        self._cond = threading.Condition()
        self._queue: list[_Item] = []
        self._queued_envelopes = 0
        self._applying: dict[str, int] = {}  # gateway -> batches being applied now
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._run, name=f"central-replay-{i}", daemon=False)
            for i in range(max(1, threads))
        ]
        for t in self._threads:
            t.start()

    @property
    def queued_envelopes(self) -> int:
        return self._queued_envelopes

    async def async_apply(self, part: Part) -> Results:
        """Apply one batch with whatever else is queued; its results, once durable."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Part] = loop.create_future()
        self._enqueue(_Item(part, loop, waiter))
        done = await waiter
        if done.error is not None:
            raise done.error
        return done.results

    def _enqueue(self, item: _Item) -> None:
        part = item.part
        size = len(part.envelopes)
        with self._cond:
            if self._stopping:
                raise RuntimeError("the replay threads are stopping")
            # One batch always fits an empty queue, however large.
            if self._queue and self._queued_envelopes + size > self.queue_max_envelopes:
                self.metrics.replay_busy.inc()
                raise Busy(self.retry_after_s, self._queued_envelopes)
            self._queue.append(item)
            self._queued_envelopes += size
            self.metrics.replay_queue.set(self._queued_envelopes)
            self._cond.notify()

    def shutdown(self) -> None:
        """Apply what is queued, then stop the threads (blocking)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()

    # --- replay threads -----------------------------------------------------------------

    def _take(self) -> list[_Item] | None:
        """The next group (waiting for one); None when stopping with nothing left."""
        with self._cond:
            while True:
                ready = [i for i in self._queue if i.part.gateway_id not in self._applying]
                if ready:
                    deadline = ready[0].queued + self.wait_s
                    short = sum(len(i.part.envelopes) for i in ready) < self.max_envelopes
                    if short and not self._stopping and time.monotonic() < deadline:
                        # A short queue waits a few ms for company (group commit).
                        self._cond.wait(max(0.0, deadline - time.monotonic()))
                        continue
                    return self._claim(ready)
                if self._stopping and not self._queue:
                    return None
                self._cond.wait()

    def _claim(self, ready: list[_Item]) -> list[_Item]:
        group: list[_Item] = []
        size = 0
        for item in ready:
            n = len(item.part.envelopes)
            if group and size + n > self.max_envelopes:
                break
            group.append(item)
            size += n
        taken = {id(i) for i in group}
        self._queue = [i for i in self._queue if id(i) not in taken]
        self._queued_envelopes -= size
        self.metrics.replay_queue.set(self._queued_envelopes)
        for item in group:
            gw = item.part.gateway_id
            self._applying[gw] = self._applying.get(gw, 0) + 1
        return group

    def _release(self, group: list[_Item]) -> None:
        with self._cond:
            for item in group:
                gw = item.part.gateway_id
                left = self._applying[gw] - 1
                if left:
                    self._applying[gw] = left
                else:
                    del self._applying[gw]
            self._cond.notify_all()

    def _run(self) -> None:
        with self.replayer.holding_connection():
            self._apply_groups()

    def _apply_groups(self) -> None:
        while (group := self._take()) is not None:
            started = time.time()
            parts = [i.part for i in group]
            for part in parts:
                self.metrics.replay_wait.observe(max(0.0, started - part.arrived.timestamp()))
            error: Exception | None = None
            try:
                self.replayer.apply_group(parts)
            except Exception as exc:  # noqa: BLE001 - handed to the one caller waiting
                error = exc
            self.metrics.commit_groups.observe(len(parts))
            self.metrics.commit_seconds.observe(time.time() - started)
            self._release(group)
            _resolve(group, error)


def _resolve(group: list[_Item], error: Exception | None) -> None:
    """Hand each batch of a committed (or failed) group to whoever waits for it.

    The waiters of one event loop are woken with one callback for the whole
    group, not one thread-safe wakeup per batch: at a fleet's rate of small
    batches those wakeups were a measurable share of the loop's time.
    """
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Part], Part]]] = {}
    for item in group:
        by_loop.setdefault(item.loop, []).append((item.waiter, item.part))
    for loop, waiters in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(_wake, waiters, error)


def _wake(waiters: list[tuple[asyncio.Future[Part], Part]], error: Exception | None) -> None:
    for waiter, part in waiters:
        if waiter.done():  # its caller was cancelled
            continue
        if error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(part)
