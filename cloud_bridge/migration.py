"""Bringing the central database schema up to date at start, with Alembic.

Migrations are numbered files in ``cloud_bridge/migrations/versions``. They
run programmatically (no ``alembic.ini``), on SQLite and PostgreSQL alike.
Before an SQLite file that already holds data is migrated, it is copied
aside with SQLite's backup API, so a failed migration never costs data.
On PostgreSQL, where several bridge workers may start together on one
database, the upgrade runs under a transaction-scoped advisory lock: one
worker migrates, the others wait and then find the schema current.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

logger = logging.getLogger(__name__)

SCRIPT_LOCATION = str(Path(__file__).with_name("migrations"))
# pg_advisory_xact_lock key: any constant of our own ("outpost" in ASCII).
MIGRATION_LOCK_KEY = 0x6F7574706F7374


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _backup_sqlite(engine: Engine, revision: str) -> Path | None:
    db = engine.url.database
    if not db or db == ":memory:" or not Path(db).exists():
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = Path(f"{db}.pre-migration-{revision}-{stamp}")
    src = sqlite3.connect(db)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
    return target


def migrate(engine: Engine) -> str | None:
    """Upgrade the schema to the newest revision; returns the revision now in place."""
    # Alembic announces its plugins and context at INFO; our own lines say what matters.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logger.getEffectiveLevel()))
    head = head_revision()
    current = current_revision(engine)
    if current == head:
        logger.debug("central database schema is current (revision %s)", head)
        return head
    if current is not None and engine.dialect.name == "sqlite":
        backup = _backup_sqlite(engine, current)
        if backup is not None:
            logger.info("backed up the central database to %s before migrating", backup)
    cfg = _alembic_config()
    with engine.begin() as conn:
        if not _hold_migration_lock(conn, head):
            logger.info("another worker migrated the central database to revision %s", head)
            return head
        logger.info("migrating the central database from revision %s to %s", current, head)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    logger.info("central database schema is at revision %s", head)
    return head


def _hold_migration_lock(conn: Connection, head: str | None) -> bool:
    """Take the migration lock (PostgreSQL; held to the end of ``conn``'s transaction).

    False when the schema was brought to ``head`` by another worker while this
    one waited: there is nothing left to do.
    """
    if conn.dialect.name != "postgresql":
        return True  # SQLite: one bridge per file, and its writes are serialised anyway
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    return MigrationContext.configure(conn).get_current_revision() != head
