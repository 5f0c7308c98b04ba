"""Heartbeats recorded in group commits: many gateways' heartbeats, one transaction.

A heartbeat (QoS 0, every 30 s from every gateway) was one transaction and
one commit each: 33 commits a second at 1,000 gateways, each a thread
handoff, a handful of queries and an fsync. :class:`HeartbeatCommitter`
gathers what arrives within ``wait_s`` (at most ``max_batch``) and records
it in one transaction in a DB thread of the uplink runner:

* the rows are locked in gateway-id order first (``SELECT … FOR UPDATE``
  on PostgreSQL), the order replay's commit groups lock them in too, so two
  groups (or two workers) never deadlock on them;
* a gateway's heartbeats keep their arrival order, and each is recorded
  with the time it came off the socket (central's clock, not the group's);
* when the group's transaction fails, each heartbeat is recorded alone, so
  one bad row costs its own heartbeat, not the others';
* QoS 0 stays QoS 0: beyond ``queue_max`` waiting heartbeats a new one is
  dropped (counted in ``outpost_bridge_dropped_messages{kind="heartbeat_overflow"}``),
  as the broker itself may drop one; the next, 30 s later, carries the same
  figures. The caller awaits the commit, so a gateway's later messages are
  handled after its heartbeat is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud_bridge import fleet
from cloud_bridge.dbrunner import DbRunner
from cloud_bridge.metrics import BridgeMetrics
from cloud_bridge.models import Gateway
from outpost.wire.schemas import Heartbeat

logger = logging.getLogger(__name__)

Record = Callable[[Session, Heartbeat, float, datetime], None]


@dataclass
class _Waiting:
    heartbeat: Heartbeat
    arrived: datetime
    done: asyncio.Future[None]


class HeartbeatCommitter:
    """Records heartbeats in groups; ``async_record`` returns once its group committed."""

    def __init__(
        self,
        runner: DbRunner,
        record: Record,
        *,
        history_every_s: float = fleet.HISTORY_EVERY_S,
        max_batch: int = 500,
        wait_s: float = 0.02,
        queue_max: int = 20_000,
        metrics: BridgeMetrics | None = None,
    ) -> None:
        self.runner = runner
        self.record = record
        self.history_every_s = history_every_s
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.queue_max = queue_max
        self.metrics = metrics or BridgeMetrics()
        self._waiting: list[_Waiting] = []
        self._flusher: asyncio.Task[None] | None = None
        self._more = asyncio.Event()

    async def async_record(self, heartbeat: Heartbeat, arrived: datetime) -> bool:
        """Record one heartbeat with whatever else came; False when it was dropped."""
        if len(self._waiting) >= self.queue_max:
            self.metrics.dropped.labels("heartbeat_overflow").inc()
            return False
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(heartbeat, arrived, done))
        if len(self._waiting) >= self.max_batch:
            self._more.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._async_flush(), name="heartbeat-commits")
        await done
        return True

    async def async_stop(self) -> None:
        """Record what is waiting, then stop."""
        if self._flusher is not None:
            self._more.set()
            with contextlib.suppress(Exception):
                await self._flusher
            self._flusher = None

    async def _async_flush(self) -> None:
        """Until nothing waits: gather for ``wait_s`` (or a full group), commit, answer."""
        while self._waiting:
            if len(self._waiting) < self.max_batch:
                self._more.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._more.wait(), self.wait_s)
            group, self._waiting = (
                self._waiting[: self.max_batch],
                self._waiting[self.max_batch :],
            )
            self.metrics.heartbeat_groups.observe(len(group))
            try:
                failed = await self.runner.async_call(self._commit, group)
            except Exception as exc:  # noqa: BLE001 - handed to every waiter
                failed = {id(w): exc for w in group}
            for w in group:
                if w.done.done():
                    continue
                problem = failed.get(id(w))
                if problem is None:
                    w.done.set_result(None)
                else:
                    w.done.set_exception(problem)

    # --- in a DB thread ---------------------------------------------------------------

    def _commit(self, group: list[_Waiting]) -> dict[int, Exception]:
        """Record the group in one transaction; if it fails, each alone. The failures."""
        # Stable: a gateway's heartbeats stay in arrival order.
        ordered = sorted(group, key=lambda w: w.heartbeat.gateway_id)
        try:
            with self.runner.db.session() as session:
                # Kept until the commit: the session keeps a loaded row only while it is
                # referenced, and without them each heartbeat's row was selected again
                # and its change flushed alone (two queries per heartbeat, not one
                # UPDATE for the group).
                _held = lock_rows(session, sorted({w.heartbeat.gateway_id for w in ordered}))
                for w in ordered:
                    self.record(session, w.heartbeat, self.history_every_s, w.arrived)
            return {}
        except Exception as exc:  # noqa: BLE001 - each alone says which one it was
            if len(ordered) == 1:
                return {id(ordered[0]): exc}
            logger.info(
                "a group of %d heartbeats failed (%s); recording each alone",
                len(ordered),
                exc.__class__.__name__,
            )
        failed: dict[int, Exception] = {}
        for w in ordered:
            try:
                with self.runner.db.session() as session:
                    self.record(session, w.heartbeat, self.history_every_s, w.arrived)
            except Exception as exc:  # noqa: BLE001 - this heartbeat's caller gets it
                failed[id(w)] = exc
        return failed


def lock_rows(session: Session, gateway_ids: list[str]) -> list[Gateway]:
    """Lock (PostgreSQL) and load these gateways' rows, in id order; keep the list while
    the session uses them."""
    stmt = select(Gateway).where(Gateway.id.in_(gateway_ids)).order_by(Gateway.id)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return list(session.scalars(stmt))
