"""One writer per attachment across every bridge worker: a lock per SHA-256 in the database.

Several bridge workers share the uplink (MQTT shared subscriptions), so two
chunks of one blob, or the same chunk sent twice, can reach two processes at
once; both would find the partial file at the same length and both append.
On PostgreSQL the lock is a session advisory lock keyed by the SHA-256
(released by the database if the worker dies holding it). On SQLite the
workers share one host and one ``data_dir``: an exclusive ``flock`` on a
lock file beside the partial files (also released when the process dies).
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text

from cloud_bridge.db import Database


def advisory_key(sha256: str) -> int:
    """A bigint from the hash's first 60 bits (collisions only cost a wait)."""
    return int(sha256[:15], 16)


@contextmanager
def held(db: Database, lock_dir: Path, sha256: str) -> Iterator[None]:
    """Hold the blob's lock (blocking; call from a thread, never the event loop)."""
    if db.sqlite:
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / ".lock", "a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return
    key = advisory_key(sha256)
    with db.engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        conn.commit()  # the lock is the session's, not the transaction's
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()
