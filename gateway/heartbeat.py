"""The gateway's heartbeat: the figures central's fleet view shows for this site.

Built from the same sources as ``GET /api/v1/status`` so the two never
disagree: the store's counts (``queries.store_status``, read by ``HeartbeatFigures``), the link's last
sync, the disk, the database file and its WAL, the replica, the certificate,
and how many devices have a live session (distinct clients, not users).

``replica_error`` is the replicator's last error while it is recent
(``REPLICA_ERROR_RECENT_S``) or replication is not running: an error from
last week that litestream recovered from is not news for the fleet view.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.store.queries import HeartbeatFigures
from gateway.store.schema import REJECTED
from gateway.store.store import Store
from outpost import __version__
from outpost.wire.schemas import Heartbeat

_STARTED = time.monotonic()
REPLICA_ERROR_RECENT_S = 600.0


def replica_error(repl: dict[str, Any], now: datetime) -> str | None:
    """The replicator's last error, if it still matters (see the module docstring)."""
    error = repl.get("last_error")
    if not error or not repl.get("enabled"):
        return None
    if repl.get("state") not in ("running", None):
        return str(error)
    at = repl.get("last_error_at")
    if not at:
        return str(error)
    when = datetime.fromisoformat(str(at).replace("Z", "+00:00"))
    return str(error) if (now - when).total_seconds() <= REPLICA_ERROR_RECENT_S else None


class HeartbeatSource:
    """Collects one :class:`Heartbeat` on demand (blocking parts off the loop)."""

    def __init__(
        self,
        gateway_id: str,
        store: Store,
        data_dir: Path,
        *,
        replication: Callable[[], dict[str, Any]] | None = None,
        cert_expiry: datetime | None = None,
        link: Callable[[], dict[str, Any]] | None = None,
        started: float | None = None,
    ) -> None:
        self._gateway_id = gateway_id
        self._store = store
        self._data_dir = data_dir
        self._replication = replication
        self._cert_expiry = cert_expiry
        # The backhaul's status() (its in-memory last sync is the status page's first choice).
        self.link = link
        self._started = _STARTED if started is None else started

    async def __call__(self) -> Heartbeat:
        status, disk_free, size = await self._store.async_read(
            HeartbeatFigures(self._data_dir, self._store.path)
        )
        repl = self._replication() if self._replication else {}
        link = self.link() if self.link else {}
        last_sync = link.get("last_sync") or status.get("last_sync")
        now = datetime.now(UTC)
        return Heartbeat(
            gateway_id=self._gateway_id,
            sent_at=now,
            version=__version__,
            uptime_s=max(0.0, time.monotonic() - self._started),
            counts=status["counts"],
            oldest_pending_s=status["oldest_pending_s"],
            rejected=status["counts"].get(REJECTED, 0),
            disk_free_bytes=disk_free,
            db_bytes=size,
            replica_lag_s=repl.get("lag_s"),
            replica_error=replica_error(repl, now),
            devices=status["devices"],
            last_sync=datetime.fromisoformat(last_sync) if last_sync else None,
            cert_expires_at=self._cert_expiry,
            attachments_to_upload=status["attachments_upload"]["to_upload"],
            attachments_to_upload_bytes=status["attachments_upload"]["to_upload_bytes"],
        )
