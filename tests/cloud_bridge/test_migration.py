"""Migrations run at start on both databases; an SQLite file with data is backed up first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from cloud_bridge.db import Database
from cloud_bridge.migration import _alembic_config, current_revision, head_revision, migrate
from cloud_bridge.models import Base
from tests.support.postgres import fresh_database


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


_START_A_WORKER = """
import sys
from cloud_bridge.db import Database
from cloud_bridge.migration import migrate
db = Database.from_url(sys.argv[1])
try:
    print(migrate(db.engine))
finally:
    db.dispose()
"""


@pytest.mark.postgres
def test_workers_starting_together_on_an_empty_database_migrate_it_once() -> None:
    """Several bridge workers started at once on a new PostgreSQL database (docs/scale.md)
    each migrate at start: one builds the schema, the others wait and find it done."""
    with fresh_database() as url:
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", _START_A_WORKER, url],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        answers = [w.communicate(timeout=120) for w in workers]
        for w, (out, err) in zip(workers, answers, strict=True):
            assert w.returncode == 0, err[-2000:]
            assert out.split() == [head_revision()]
        db = Database.from_url(url)
        try:
            assert current_revision(db.engine) == head_revision()
        finally:
            db.dispose()
