"""Fleet history: every gateway's heartbeats and state changes, kept fleet.history_days.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "gateway_history",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("gateway_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
    )
    op.create_index("ix_gateway_history_gateway_at", "gateway_history", ["gateway_id", "at"])
    op.create_index("ix_gateway_history_at", "gateway_history", ["at"])


def downgrade() -> None:
    op.drop_index("ix_gateway_history_at", "gateway_history")
    op.drop_index("ix_gateway_history_gateway_at", "gateway_history")
    op.drop_table("gateway_history")
