"""Checks on a database file while no ``Store`` has it open (blocking, plain sqlite3).

Two callers work on the file itself, not through the store's writer, and
so use sqlite3 directly rather than a task: ``outpost-gateway restore``
inspects and repairs a freshly restored file before the gateway starts (no
store exists yet, and opening one would migrate the file), and the replica
guard asks whether litestream ever managed this file before it may write to
the replica (read-only, and it must not create or migrate the database). The
SQL stays here, with the rest of the gateway's.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.store.migration import StoreError

# What a check on a file raises when SQLite cannot read it (callers catch it
# without importing sqlite3).
FileCheckError = sqlite3.Error


def was_replicated(path: Path) -> bool:
    """Whether litestream has managed this (existing) file: its ``_litestream_seq`` table."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_litestream_seq'"
        ).fetchone()
    finally:
        conn.close()
    return row is not None


def inspect_restored(path: Path, data_dir: Path) -> tuple[dict[str, int], int, list[str]]:
    """A restored file: envelope counts by state, activities, and the attachments now missing.

    Raises ``StoreError`` if it fails SQLite's quick check. Attachments marked
    complete whose blob file is not in ``data_dir`` are marked incomplete
    (their devices upload them again); then the WAL is folded into the file.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        check = conn.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            raise StoreError(f"the restored database fails its integrity check: {check[0][0]}")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        envelopes: dict[str, int] = {}
        if "envelopes" in tables:
            envelopes = {
                str(state): int(n)
                for state, n in conn.execute("SELECT state, count(*) FROM envelopes GROUP BY state")
            }
        activities = 0
        if "activities" in tables:
            activities = int(conn.execute("SELECT count(*) FROM activities").fetchone()[0])
        missing: list[str] = []
        if "attachments" in tables:
            for sha, rel in conn.execute(
                "SELECT sha256, path FROM attachments WHERE complete AND path IS NOT NULL"
            ):
                if not (data_dir / str(rel)).is_file():
                    missing.append(str(sha))
            if missing:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "UPDATE attachments SET complete = 0, received = 0, path = NULL, "
                    "completed_at = NULL WHERE sha256 = ?",
                    [(sha,) for sha in missing],
                )
                conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # nothing else has it open yet
        return envelopes, activities, missing
    finally:
        conn.close()
