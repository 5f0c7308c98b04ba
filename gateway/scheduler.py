"""Periodic work on the gateway (APScheduler 3 in the event loop).

Jobs: the heartbeat to central, and retention of finished history, on the
scheduler both services share (``outpost/scheduling.py``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

from aiohttp import web

from gateway.backhaul import Backhaul
from gateway.config import GatewayConfig
from gateway.store import Store
from gateway.store.form_versions import PruneFormVersions
from gateway.store.maintenance import ExpireHistory, ExpireSessions
from gateway.uplink import Uplink
from outpost.scheduling import new_scheduler, stoppable

_LOGGER = logging.getLogger(__name__)
CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


def scheduler_ctx(config: GatewayConfig, store: Store, backhaul: Backhaul) -> CleanupCtx:
    """The scheduler as a ``cleanup_ctx``: started inside the running loop, stopped on shutdown."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async with _running_scheduler(config, store, backhaul):
            yield

    return ctx


@contextlib.asynccontextmanager
async def _running_scheduler(
    config: GatewayConfig, store: Store, backhaul: Backhaul
) -> AsyncIterator[None]:
    scheduler = new_scheduler()

    async def retention() -> None:
        now = datetime.now(UTC)
        cutoff = now - timedelta(days=config.store.history_retention_days)
        gone = await store.async_write(ExpireHistory(cutoff))
        await store.async_write(ExpireSessions(now))
        if gone:
            _LOGGER.info("retention: %d finished activities older than %s removed", gone, cutoff)
        # After the history: an expired activity's versions go with it.
        forms = await store.async_write(PruneFormVersions())
        if forms:
            _LOGGER.info("retention: %d form versions no draft or activity names removed", forms)

    if isinstance(backhaul, Uplink):
        scheduler.add_job(
            stoppable(backhaul.async_send_heartbeat),
            "interval",
            seconds=config.mqtt.heartbeat_s,
            id="heartbeat",
            name="heartbeat to central",
        )
    scheduler.add_job(
        stoppable(retention),
        "interval",
        hours=1,
        id="retention",
        name="history retention",
        next_run_time=datetime.now(UTC) + timedelta(seconds=30),
    )
    scheduler.start()
    try:
        yield
    finally:
        scheduler.shutdown(wait=False)
