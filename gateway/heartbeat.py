"""The gateway's heartbeat: the figures central's fleet view shows for this site.

Built from the same sources as ``GET /api/v1/status`` so the two never
disagree: the store's counts, the link, the disk, the replica, the
certificate.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from gateway.api.queries import store_status
from gateway.store.schema import REJECTED, sessions
from gateway.store.store import Store
from outpost import __version__
from outpost.wire.schemas import Heartbeat

_STARTED = time.monotonic()


def _devices(conn: Any) -> int:
    now = datetime.now(UTC)
    return int(
        conn.execute(
            select(func.count(func.distinct(sessions.c.client))).where(sessions.c.expires_at > now)
        ).scalar_one()
    )


def db_bytes(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(path) + suffix)
        if p.exists():
            total += p.stat().st_size
    return total


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
    ) -> None:
        self._gateway_id = gateway_id
        self._store = store
        self._data_dir = data_dir
        self._replication = replication
        self._cert_expiry = cert_expiry

    def _collect(self, conn: Any) -> tuple[dict[str, Any], int, int, int]:
        # Runs on a reader thread: the filesystem calls stay off the loop too.
        disk_free = shutil.disk_usage(self._data_dir).free
        return store_status(conn), _devices(conn), disk_free, db_bytes(self._store.path)

    async def __call__(self) -> Heartbeat:
        status, devices, disk_free, size = await self._store.async_read(self._collect)
        repl = self._replication() if self._replication else {}
        last_sync = status.get("last_sync")
        return Heartbeat(
            gateway_id=self._gateway_id,
            sent_at=datetime.now(UTC),
            version=__version__,
            uptime_s=time.monotonic() - _STARTED,
            counts=status["counts"],
            oldest_pending_s=status["oldest_pending_s"],
            rejected=status["counts"].get(REJECTED, 0),
            disk_free_bytes=disk_free,
            db_bytes=size,
            replica_lag_s=repl.get("lag_s"),
            replica_error=repl.get("last_error"),
            devices=devices,
            last_sync=datetime.fromisoformat(last_sync) if last_sync else None,
            cert_expires_at=self._cert_expiry,
        )
