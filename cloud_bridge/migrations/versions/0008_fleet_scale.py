"""The fleet for thousands: health figures as columns (filtered, counted, sorted in SQL), indexes.

The figures a gateway's health is judged on were only inside the
``last_heartbeat`` JSON; they become columns, filled here from that JSON for
the gateways already known. ``history_at`` thins what goes into
``gateway_history`` (one heartbeat per ``fleet.history_every_s``).

Revision ID: 0008
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
MAX_PENDING_S = 50 * 365 * 86400.0  # as cloud_bridge.fleet.MAX_PENDING_S

def _columns() -> tuple[sa.Column[Any], ...]:
    return (
    sa.Column("backlog", sa.BigInteger(), nullable=True),
    sa.Column("oldest_pending_s", sa.Float(), nullable=True),
    sa.Column("pending_since", TS, nullable=True),
    sa.Column("disk_free_bytes", sa.BigInteger(), nullable=True),
    sa.Column("replica_lag_s", sa.Float(), nullable=True),
    sa.Column("replica_failing", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("cert_expires_at", TS, nullable=True),
    sa.Column("history_at", TS, nullable=True),
    )


COLUMNS = _columns()
INDEXES = {
    "ix_gateways_state_id": ["state", "id"],
    "ix_gateways_version_id": ["version", "id"],
    "ix_gateways_heartbeat_at_id": ["heartbeat_at", "id"],
}


def _aware(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).astimezone(UTC)


def _figures(hb: dict[str, Any], heard: datetime | None) -> dict[str, Any]:
    counts = hb.get("counts") or {}
    oldest = hb.get("oldest_pending_s")
    oldest = None if oldest is None else min(float(oldest), MAX_PENDING_S)
    return {
        "backlog": sum(int(counts.get(s, 0)) for s in ("queued", "sent")),
        "oldest_pending_s": oldest,
        "pending_since": (
            None if oldest is None or heard is None else heard - timedelta(seconds=oldest)
        ),
        "disk_free_bytes": hb.get("disk_free_bytes"),
        "replica_lag_s": hb.get("replica_lag_s"),
        "replica_failing": bool(hb.get("replica_error")),
        "cert_expires_at": _aware(hb.get("cert_expires_at")),
    }


def upgrade() -> None:
    with op.batch_alter_table("gateways") as batch:
        for column in _columns():
            batch.add_column(column)
    for name, columns in INDEXES.items():
        op.create_index(name, "gateways", columns)
    bind = op.get_bind()
    gateways = sa.table(
        "gateways",
        sa.column("id", sa.String()),
        sa.column("last_heartbeat", sa.JSON()),
        sa.column("heartbeat_at", TS),
        *(sa.column(c.name, c.type) for c in COLUMNS),
    )
    rows = bind.execute(
        sa.select(gateways.c.id, gateways.c.last_heartbeat, gateways.c.heartbeat_at).where(
            gateways.c.last_heartbeat.is_not(None)
        )
    ).all()
    for gid, hb, heard in rows:
        if isinstance(hb, dict):
            bind.execute(
                gateways.update()
                .where(gateways.c.id == gid)
                .values(**_figures(hb, _aware(heard)), history_at=_aware(heard))
            )


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, "gateways")
    with op.batch_alter_table("gateways") as batch:
        for column in reversed(COLUMNS):
            batch.drop_column(column.name)
