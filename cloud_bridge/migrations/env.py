"""Alembic environment: runs on the connection that ``cloud_bridge.migration`` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from cloud_bridge.models import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection: Connection | None = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through cloud_bridge.migration.migrate()")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
