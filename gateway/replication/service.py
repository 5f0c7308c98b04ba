"""Replication in the running gateway: the ``cleanup_ctx`` and the status others read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.api.keys import CONFIG_KEY, METRICS_KEY
from gateway.replication.metrics import ReplicationCollector
from gateway.replication.supervisor import _RUNNING, Replicator

REPLICATOR_KEY = web.AppKey("outpost_replicator", Replicator)
DISABLED_STATUS: dict[str, Any] = {"enabled": False}


def status_for_db(db_path: Path) -> dict[str, Any]:
    """Status of the replicator running for ``db_path`` (for the heartbeat), or disabled."""
    replicator = _RUNNING.get(Path(db_path).absolute())
    return replicator.status() if replicator is not None else dict(DISABLED_STATUS)


def replication_status(app: web.Application) -> dict[str, Any]:
    """``status()`` of the app's replicator, or ``{"enabled": False}`` (for /api/v1/status)."""
    replicator = app.get(REPLICATOR_KEY)
    return replicator.status() if replicator is not None else dict(DISABLED_STATUS)


async def replication_ctx(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx`` entry: runs the replicator while the app runs, when enabled.

    Put it first among the background services so it stops last: the final
    writes of the others reach the replica before litestream exits.
    """
    config = app[CONFIG_KEY]
    if not config.replication.enabled:
        yield
        return
    replicator = Replicator.from_config(config)
    await replicator.start()
    app[REPLICATOR_KEY] = replicator
    collector = ReplicationCollector(replicator)
    registry = app[METRICS_KEY].registry if METRICS_KEY in app else None
    if registry is not None:
        registry.register(collector)
    try:
        yield
    finally:
        if registry is not None:
            registry.unregister(collector)
        await replicator.stop()
