"""Is the replica this database's? A guard before litestream may write to it.

A replica holding data while the local database was never replicated (no
``_litestream_seq`` table: a fresh or replaced database) would otherwise be
overwritten by an empty database.
"""

from __future__ import annotations

from pathlib import Path

from gateway.store.files import was_replicated


def db_was_replicated(db_path: Path) -> bool | None:
    """True if litestream has managed this database file; None if it does not exist (blocking)."""
    if not db_path.exists():
        return None
    return was_replicated(db_path)


def foreign_replica_message(replica: str, replica_txid: int, db_path: Path) -> str:
    """Why replication is refused when the replica holds another database's history."""
    return (
        f"the replica {replica} holds data (txid {replica_txid}) "
        f"that {db_path} never came from; restore it with `outpost-gateway restore` "
        "or move the replica aside"
    )
