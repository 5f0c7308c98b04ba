"""Initial central schema: users, activity types, activities, records, ledger, gateways.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("username", sa.String(64), primary_key=True),
        sa.Column("password_hash", sa.String(512), nullable=False),
        sa.Column("offline", sa.Boolean(), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "activity_types",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("offline", sa.Boolean(), nullable=False),
        sa.Column("form", sa.JSON(), nullable=False),
        sa.Column("form_version", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "activities",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("type", sa.String(64), sa.ForeignKey("activity_types.name"), nullable=False),
        sa.Column("responsible", sa.String(64), sa.ForeignKey("users.username"), nullable=False),
        sa.Column("approver", sa.String(64), nullable=True),
        sa.Column("approved_at", TS, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("holder_gateway", sa.String(64), nullable=True),
        sa.Column("holder_user", sa.String(64), nullable=True),
        sa.Column("checked_out_at", TS, nullable=True),
        sa.Column("checkout_no", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("canceled_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_activities_state", "activities", ["state"])
    op.create_table(
        "records",
        sa.Column("activity_id", sa.String(64), sa.ForeignKey("activities.id"), primary_key=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("envelope_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attachments", sa.JSON(), nullable=False),
        sa.Column("form_version", sa.Integer(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "record_rows",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("activity_id", sa.String(64), sa.ForeignKey("activities.id"), nullable=False),
        sa.Column("table_name", sa.String(64), nullable=False),
        sa.Column("row_index", sa.Integer(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.UniqueConstraint("activity_id", "table_name", "row_index"),
    )
    op.create_table(
        "envelope_ledger",
        sa.Column("envelope_id", sa.String(36), primary_key=True),
        sa.Column("gateway_id", sa.String(64), nullable=False),
        sa.Column("activity_id", sa.String(64), nullable=False),
        sa.Column("checkout_no", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("base_version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("form_version", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("code", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("arrived_at", TS, nullable=False),
        sa.Column("applied_at", TS, nullable=True),
        sa.Column("activity_version", sa.Integer(), nullable=True),
        sa.Column("checked_in", sa.Boolean(), nullable=False),
        sa.Column("batch_id", sa.String(36), nullable=True),
        sa.Column("attachments", sa.JSON(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=True),
    )
    op.create_index(
        "ix_ledger_activity_seq", "envelope_ledger", ["activity_id", "checkout_no", "seq"]
    )
    op.create_index("ix_ledger_outcome", "envelope_ledger", ["outcome"])
    op.create_table(
        "gateways",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("first_seen", TS, nullable=False),
        sa.Column("last_seen", TS, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_at", TS, nullable=True),
        sa.Column("version", sa.String(64), nullable=True),
        sa.Column("last_heartbeat", sa.JSON(), nullable=True),
        sa.Column("heartbeat_at", TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", TS, nullable=True),
    )


def downgrade() -> None:
    for table in (
        "gateways",
        "envelope_ledger",
        "record_rows",
        "records",
        "activities",
        "activity_types",
        "users",
    ):
        op.drop_table(table)
