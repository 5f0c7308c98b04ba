"""Replication in the running gateway: one :class:`Replication` per gateway.

It holds the replicator while it runs and is what everything else reads:
the API's status routes and /metrics (through ``REPLICATOR_KEY`` on the
app) and the heartbeat (through :meth:`Replication.status`, handed to it
when the gateway is assembled in ``gateway/app.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from gateway.config import GatewayConfig
from gateway.replication.supervisor import Replicator

REPLICATOR_KEY = web.AppKey("outpost_replicator", Replicator)
DISABLED_STATUS: dict[str, Any] = {"enabled": False}


class Replication:
    """The gateway's replication: runs the replicator as a ``cleanup_ctx`` when enabled."""

    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        self.replicator: Replicator | None = None

    def status(self) -> dict[str, Any]:
        """The replicator's ``status()``, or ``{"enabled": False}`` (safe in the loop)."""
        replicator = self.replicator
        return replicator.status() if replicator is not None else dict(DISABLED_STATUS)

    async def ctx(self, app: web.Application) -> AsyncIterator[None]:
        """``cleanup_ctx`` entry: runs the replicator while the app runs, when enabled.

        Put it first among the background services so it stops last: the final
        writes of the others reach the replica before litestream exits.
        """
        if not self._config.replication.enabled:
            yield
            return
        replicator = Replicator.from_config(self._config)
        await replicator.start()
        self.replicator = replicator
        app[REPLICATOR_KEY] = replicator
        try:
            yield
        finally:
            self.replicator = None
            await replicator.stop()


def replication_status(app: web.Application) -> dict[str, Any]:
    """``status()`` of the app's replicator, or ``{"enabled": False}`` (for /api/v1/status)."""
    replicator = app.get(REPLICATOR_KEY)
    return replicator.status() if replicator is not None else dict(DISABLED_STATUS)
