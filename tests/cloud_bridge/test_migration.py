"""Migrations run at start on both databases; an SQLite file with data is backed up first."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from cloud_bridge.db import Database
from cloud_bridge.migration import _alembic_config, current_revision, head_revision, migrate
from cloud_bridge.models import Base


def test_migrate_creates_schema_and_is_idempotent(central_db_url: str) -> None:
    db = Database.from_url(central_db_url)
    try:
        assert current_revision(db.engine) is None
        assert migrate(db.engine) == head_revision()
        assert migrate(db.engine) == head_revision()
        tables = set(inspect(db.engine).get_table_names())
        assert {
            "users",
            "activity_types",
            "activities",
            "records",
            "record_rows",
            "envelope_ledger",
            "gateways",
            "gateway_history",
            "blobs",
        } <= tables
    finally:
        db.dispose()


def test_models_match_the_migrations(central_db_url: str) -> None:
    """The ORM models and the migrated schema agree: tables, columns, types, indexes."""
    db = Database.from_url(central_db_url)
    try:
        migrate(db.engine)
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        db.dispose()


def test_sqlite_file_is_backed_up_before_an_upgrade(tmp_path: Path) -> None:
    db = Database.from_url(f"sqlite:///{tmp_path / 'central.db'}")
    try:
        cfg = _alembic_config()
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")
        if head_revision() == "0001":
            return  # nothing to upgrade to yet
        migrate(db.engine)
        backups = list(tmp_path.glob("central.db.pre-migration-0001-*"))
        assert len(backups) == 1 and backups[0].stat().st_size > 0
    finally:
        db.dispose()
