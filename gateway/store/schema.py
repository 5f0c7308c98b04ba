"""The gateway's tables: one place that names every table and column.

Timestamps are stored as ISO-8601 UTC text (``UtcDateTime``) so they sort as
text and read back as aware datetimes. JSON documents (form definitions, the
canonical ``WireEnvelope``) are stored as text exactly as they will be sent.
Other modules (uplink, outbox, downlink) import these table objects and write
their own queries against them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)

metadata = MetaData()


class UtcDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as fixed-width ISO-8601 UTC text."""

    impl = String(32)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; give a timezone")
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return datetime.fromisoformat(str(value)).astimezone(UTC)


# Envelope states, in the order an envelope moves through them.
STORED = "stored"  # saved; its activity is not completed yet (rule 4)
QUEUED = "queued"  # its activity is completed: waiting for backhaul
SENT = "sent"  # published; waiting for central's application-level ack
APPLIED = "applied"  # central applied it
REJECTED = "rejected"  # central refused it (code + reason)
ENVELOPE_STATES = (STORED, QUEUED, SENT, APPLIED, REJECTED)
PENDING_STATES = (STORED, QUEUED, SENT)  # unsent field data: never expired or dropped

# Activity states on this gateway.
OFFLINE = "offline"  # checked out to this gateway: crews work on it
CHECKED_IN = "checked_in"  # central applied the completed upload (rule 5)
RECALLED = "recalled"  # central took it back (crews see it as canceled)
ACTIVITY_STATES = (OFFLINE, CHECKED_IN, RECALLED)

activities = Table(
    "activities",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("title", String(300), nullable=False),
    Column("type", String(64), nullable=False),
    Column("form", Text, nullable=False),  # FormDefinition JSON
    Column("form_version", Integer, nullable=False),
    Column("responsible", String(64), nullable=False),
    Column("version", Integer, nullable=False),  # central's version when dispatched
    Column("holder", String(64), nullable=False),  # who checked it out
    Column("dispatched_at", UtcDateTime, nullable=False),
    Column("state", String(16), nullable=False, default=OFFLINE),
    Column("checked_in_at", UtcDateTime),
    Column("recalled_at", UtcDateTime),
    Column("recall_reason", Text),
    Column("updated_at", UtcDateTime, nullable=False),
    # A round of field work starts after this seq: envelopes at or below it
    # belong to an earlier round (central sent the activity back, or dispatched
    # it again after a check-in) and neither lock nor complete this one.
    Column("reopen_seq", Integer, nullable=False, default=0, server_default="0"),
    # Central's review note when it sent the activity back (``Dispatch.review``).
    Column("review_round", Integer),
    Column("review_note", Text),
    Column("review_by", String(200)),
    Column("reviewed_at", UtcDateTime),
)
Index("ix_activities_responsible", activities.c.responsible, activities.c.state)
Index("ix_activities_holder", activities.c.holder, activities.c.state)

users = Table(
    "users",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("password_hash", String(512), nullable=False),  # argon2, pushed from central
    Column("offline", Boolean, nullable=False),  # may work offline
    Column("display_name", String(200)),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("site_lead", Boolean, nullable=False, default=False),  # sees the whole gateway
)

offline_types = Table(
    "offline_types",
    metadata,
    Column("name", String(64), primary_key=True),
)

sessions = Table(
    "sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # sha256 hex of the token
    Column("username", String(64), nullable=False),
    Column("client", String(200)),  # remote address at sign-in
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
)
Index("ix_sessions_username", sessions.c.username)

signin_failures = Table(
    "signin_failures",
    metadata,
    Column("key", String(300), primary_key=True),  # "user:<name>" or "client:<address>"
    Column("failures", Integer, nullable=False),
    Column("last_at", UtcDateTime, nullable=False),
    Column("locked_until", UtcDateTime),
)

envelopes = Table(
    "envelopes",
    metadata,
    Column("envelope_id", String(36), primary_key=True),
    Column("activity_id", String(64), ForeignKey("activities.id"), nullable=False),
    Column("author", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # draft | completed
    Column("base_version", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),  # the device's clock
    Column("received_at", UtcDateTime, nullable=False),  # the gateway's clock
    Column("form_version", Integer, nullable=False),
    Column("body", Text, nullable=False),  # canonical WireEnvelope JSON, sent verbatim
    Column("body_hash", String(64), nullable=False),  # sha256 of the posted body (idempotency)
    Column("size", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("code", String(64)),  # set when rejected
    Column("reason", Text),
    Column("sent_at", UtcDateTime),
    Column("result_at", UtcDateTime),  # central's clock: when it applied or rejected
    Column("batch_id", String(36)),
    Column("attempts", Integer, nullable=False, default=0),
)
Index("ix_envelopes_activity_seq", envelopes.c.activity_id, envelopes.c.seq, unique=True)
Index("ix_envelopes_state_received", envelopes.c.state, envelopes.c.received_at)
Index("ix_envelopes_batch", envelopes.c.batch_id)
Index(
    "ix_envelopes_activity_status",
    envelopes.c.activity_id,
    envelopes.c.status,
    envelopes.c.state,
)

attachments = Table(
    "attachments",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("size", Integer, nullable=False),  # the declared total length
    Column("received", Integer, nullable=False),  # bytes durably on disk so far
    Column("complete", Boolean, nullable=False, default=False),  # hash verified
    Column("path", Text),  # relative to data_dir once complete
    Column("uploaded_by", String(64)),
    Column("created_at", UtcDateTime, nullable=False),
    Column("completed_at", UtcDateTime),
    # Upload to central: bytes central confirmed holding on disk, when it had
    # all of them, or why it refused the blob for good.
    Column("uploaded", Integer, nullable=False, default=0),
    Column("uploaded_at", UtcDateTime),
    Column("upload_error", Text),
)
Index(
    "ix_attachments_to_upload",
    attachments.c.completed_at,
    sqlite_where=attachments.c.uploaded_at.is_(None),
)

# Which blobs each envelope references (from its body), so the uploader finds
# the blobs of completed activities without parsing every envelope.
envelope_attachments = Table(
    "envelope_attachments",
    metadata,
    Column("envelope_id", String(36), primary_key=True),
    Column("sha256", String(64), primary_key=True),
)
Index("ix_envelope_attachments_sha256", envelope_attachments.c.sha256)

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# meta keys used by more than one module
META_LAST_SYNC = "last_sync"  # ISO time of the last exchange with central
