"""Reviews of applied uploads (rounds of field work) and every version of a form.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "activity_type_versions",
        sa.Column(
            "type_name", sa.String(64), sa.ForeignKey("activity_types.name"), primary_key=True
        ),
        sa.Column("form_version", sa.Integer(), primary_key=True),
        sa.Column("form", sa.JSON(), nullable=False),
        sa.Column("offline", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(64)),
    )
    # The version each type has now is the first one kept (earlier ones were not).
    op.execute(
        "INSERT INTO activity_type_versions (type_name, form_version, form, offline, created_at)"
        " SELECT name, form_version, form, offline, updated_at FROM activity_types"
    )
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("activity_id", sa.String(64), sa.ForeignKey("activities.id"), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("note", sa.Text()),
        sa.Column("reviewer", sa.String(64), nullable=False),
        sa.Column("reviewer_display", sa.String(200)),
        sa.Column("via", sa.String(32), nullable=False),
        sa.Column("envelope_id", sa.String(36)),
        sa.Column("gateway_id", sa.String(64)),
        sa.Column("checkout_no", sa.Integer()),
        sa.Column("reviewed_at", TS, nullable=False),
    )
    op.create_index("ix_reviews_activity", "reviews", ["activity_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_reviews_activity", table_name="reviews")
    op.drop_table("reviews")
    op.drop_table("activity_type_versions")
