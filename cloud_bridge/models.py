"""The central database, as SQLAlchemy 2 typed ORM models.

The schema itself is created by the Alembic migrations in
``cloud_bridge/migrations``; these classes must match them.
Times are stored as timezone-aware UTC datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from outpost.passwords import lockout_table
from outpost.times import utcnow as utcnow

# Activity states.
ONLINE = "online"
OFFLINE = "offline"
CANCELED = "canceled"
# Ledger outcomes.
APPLIED = "applied"
REJECTED = "rejected"
HELD = "held"


class UTCDateTime(TypeDecorator[datetime]):
    """A datetime stored as UTC and always read back timezone-aware (SQLite drops tzinfo)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class User(Base):
    __tablename__ = "users"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(512))
    offline: Mapped[bool] = mapped_column(Boolean, default=False)
    display_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    role: Mapped[str] = mapped_column(String(16), default="crew")  # see cloud_bridge.permissions
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    password_changed_at: Mapped[datetime | None]


class UserSite(Base):
    """A gateway (site) a person works at; ``site_lead`` where they lead it."""

    __tablename__ = "user_sites"
    __table_args__ = (Index("ix_user_sites_gateway", "gateway_id"),)

    username: Mapped[str] = mapped_column(
        String(64), ForeignKey("users.username", ondelete="CASCADE"), primary_key=True
    )
    gateway_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site_lead: Mapped[bool] = mapped_column(Boolean, default=False)


class WebSession(Base):
    """A signed-in person: a page's cookie (``web``) or ``POST /api/v1/session`` (``api``).

    Only the SHA-256 of the token is kept. ``seen_at`` drives the idle expiry,
    ``expires_at`` is the absolute end.
    """

    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_username", "username"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), ForeignKey("users.username"))
    kind: Mapped[str] = mapped_column(String(8))
    csrf: Mapped[str] = mapped_column(String(64))
    client: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class ApiToken(Base):
    """A person's long-lived API token for scripts (only its SHA-256 is kept)."""

    __tablename__ = "api_tokens"
    __table_args__ = (Index("ix_api_tokens_username", "username"),)

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    username: Mapped[str] = mapped_column(String(64), ForeignKey("users.username"))
    name: Mapped[str] = mapped_column(String(100))
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


# Sign-in guesses per key (``user:<name>``, ``client:<address>``): the shared
# lockout's table (outpost/passwords.py), the same columns as the gateway's.
signin_failures = lockout_table(Base.metadata, "signin_failures", type_=UTCDateTime())


class AuditEntry(Base):
    """One change made on the platform or the API: who, when, what, from where.

    ``actor_kind``: ``user`` (a signed-in person or their API token),
    ``admin_token`` (a script with the bridge's admin token) or ``system``.
    """

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_at", "at"),
        Index("ix_audit_target", "target_type", "target_id"),
        Index("ix_audit_actor", "actor"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str | None] = mapped_column(String(64))
    actor_kind: Mapped[str] = mapped_column(String(16))
    on_behalf_of: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(200))
    summary: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    client: Mapped[str | None] = mapped_column(String(200))
    via: Mapped[str] = mapped_column(String(8))  # api | page


class ActivityType(Base):
    __tablename__ = "activity_types"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    offline: Mapped[bool] = mapped_column(Boolean, default=False)
    form: Mapped[dict[str, Any]] = mapped_column(JSON)
    form_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Activity(Base):
    __tablename__ = "activities"
    __table_args__ = (Index("ix_activities_state", "state"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(String(300))
    type: Mapped[str] = mapped_column(String(64), ForeignKey("activity_types.name"))
    responsible: Mapped[str] = mapped_column(String(64), ForeignKey("users.username"))
    approver: Mapped[str | None] = mapped_column(String(64))
    approved_at: Mapped[datetime | None]
    approved_via: Mapped[str | None] = mapped_column(String(16))  # password | admin_token
    created_by: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=ONLINE)
    holder_gateway: Mapped[str | None] = mapped_column(String(64))
    holder_user: Mapped[str | None] = mapped_column(String(64))
    checked_out_at: Mapped[datetime | None]
    # Counts check-outs; envelopes (and their seq) belong to one check-out.
    checkout_no: Mapped[int] = mapped_column(Integer, default=0)
    # Highest seq consumed (applied or rejected) in the current check-out.
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer, default=1)
    canceled_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Record(Base):
    """The applied parent record of an activity (the last applied envelope's)."""

    __tablename__ = "records"

    activity_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("activities.id"), primary_key=True
    )
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    envelope_id: Mapped[str] = mapped_column(String(36))
    seq: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    attachments: Mapped[list[str]] = mapped_column(JSON, default=list)
    form_version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class RecordRow(Base):
    """One child row of an activity's applied record."""

    __tablename__ = "record_rows"
    __table_args__ = (UniqueConstraint("activity_id", "table_name", "row_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    activity_id: Mapped[str] = mapped_column(String(64), ForeignKey("activities.id"))
    table_name: Mapped[str] = mapped_column(String(64))
    row_index: Mapped[int] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class LedgerEntry(Base):
    """One envelope as central saw it: the idempotency key and its outcome.

    Three clocks, never overwritten by one another: ``created_at`` (device),
    ``received_at`` (gateway), ``applied_at`` (central, when decided);
    ``arrived_at`` is when central first saw it.
    """

    __tablename__ = "envelope_ledger"
    __table_args__ = (
        Index("ix_ledger_activity_seq", "activity_id", "checkout_no", "seq"),
        Index("ix_ledger_outcome", "outcome"),
    )

    envelope_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    gateway_id: Mapped[str] = mapped_column(String(64))
    activity_id: Mapped[str] = mapped_column(String(64))
    checkout_no: Mapped[int] = mapped_column(Integer, default=0)
    seq: Mapped[int] = mapped_column(Integer)
    base_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    author: Mapped[str] = mapped_column(String(64))
    form_version: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    code: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    received_at: Mapped[datetime]
    arrived_at: Mapped[datetime] = mapped_column(default=utcnow)
    applied_at: Mapped[datetime | None]
    activity_version: Mapped[int | None] = mapped_column(Integer)
    checked_in: Mapped[bool] = mapped_column(Boolean, default=False)
    batch_id: Mapped[str | None] = mapped_column(String(36))
    attachments: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The whole envelope while it is held (waiting for a missing seq); cleared once decided.
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Gateway(Base):
    __tablename__ = "gateways"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)
    state: Mapped[str] = mapped_column(String(16), default="unknown")
    state_at: Mapped[datetime | None]
    version: Mapped[str | None] = mapped_column(String(64))
    last_heartbeat: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    heartbeat_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]
    # The heartbeat figures the fleet's health is judged on, as columns, so that
    # one page of a fleet of thousands is filtered, counted and sorted by the
    # database (cloud_bridge.fleet_query); the whole heartbeat stays in last_heartbeat.
    backlog: Mapped[int | None] = mapped_column(BigInteger)
    oldest_pending_s: Mapped[float | None] = mapped_column(Float)
    pending_since: Mapped[datetime | None]  # heartbeat_at - oldest_pending_s
    disk_free_bytes: Mapped[int | None] = mapped_column(BigInteger)
    replica_lag_s: Mapped[float | None] = mapped_column(Float)
    replica_failing: Mapped[bool] = mapped_column(Boolean, default=False)
    cert_expires_at: Mapped[datetime | None]
    # When the last heartbeat went into gateway_history (fleet.history_every_s).
    history_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_gateways_state_id", "state", "id"),
        Index("ix_gateways_version_id", "version", "id"),
        Index("ix_gateways_heartbeat_at_id", "heartbeat_at", "id"),
    )


class GatewayHistory(Base):
    """What a gateway said over time: heartbeats and state changes (kept ``fleet.history_days``).

    ``at`` is central's clock when it heard it; ``data`` the heartbeat (JSON)
    or the state message's own fields.
    """

    __tablename__ = "gateway_history"
    __table_args__ = (
        Index("ix_gateway_history_gateway_at", "gateway_id", "at"),
        Index("ix_gateway_history_at", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    gateway_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # heartbeat | online | offline
    at: Mapped[datetime]
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Blob(Base):
    """An attachment blob central holds in full, its SHA-256 verified.

    The bytes are a file (``cloud_bridge.blobs``); this row is written only
    after that file is in place, so "which attachments does central hold" is
    one query. ``gateway_id`` is the gateway that completed it first.
    """

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    gateway_id: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class ActivityTypeVersion(Base):
    """Every version of an activity type's form, kept (an envelope names the one it was filled against)."""

    __tablename__ = "activity_type_versions"

    type_name: Mapped[str] = mapped_column(
        String(64), ForeignKey("activity_types.name"), primary_key=True
    )
    form_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    form: Mapped[dict[str, Any]] = mapped_column(JSON)
    offline: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(64))


class Review(Base):
    """A review of an activity's applied upload: ``approved`` or ``has_issues`` with a note.

    ``round`` is the round of field work reviewed (1 = the first); a
    ``has_issues`` review sent the activity back to ``gateway_id`` with the
    check-out ``checkout_no``, which starts round ``round + 1``.
    ``envelope_id`` is the record's envelope the reviewer looked at.
    """

    __tablename__ = "reviews"
    __table_args__ = (Index("ix_reviews_activity", "activity_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    activity_id: Mapped[str] = mapped_column(String(64), ForeignKey("activities.id"))
    round: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    reviewer: Mapped[str] = mapped_column(String(64))
    reviewer_display: Mapped[str | None] = mapped_column(String(200))
    via: Mapped[str] = mapped_column(String(32))
    envelope_id: Mapped[str | None] = mapped_column(String(36))
    gateway_id: Mapped[str | None] = mapped_column(String(64))
    checkout_no: Mapped[int | None] = mapped_column(Integer)
    reviewed_at: Mapped[datetime] = mapped_column(default=utcnow)
