"""The gateway's tables, read from the numbered migrations: one source for the shape.

The steps in ``gateway/store/migration.py`` are the only place a table,
column or index is written (a numbered step suits an appliance: a file of any
age steps up to the latest, and a released step is never edited). At import
this module runs every step on an in-memory SQLite database and reflects each
table from it (a few milliseconds; docs/benchmarks.md, "Idle memory"). What
SQL cannot say is declared here, per column, in ``OVERRIDES``:

- which text columns hold aware datetimes (``UtcDateTime``: fixed-width
  ISO-8601 UTC text, so they sort as text and read back as aware datetimes);
- the values SQLAlchemy fills in when an insert leaves a column out
  (Python-side defaults; step 1 created those columns without a SQL default).

Everything else (names, SQL types, nullability, keys, indexes, SQL defaults)
comes from the migrations, so adding a column is one new step, plus an
override only when the column needs one. Reflecting rather than generating a
tables file keeps no second copy to go stale; a table the code names that the
steps do not create, or an override for a column they do not create, fails at
import (``reflect``). Booleans need no override: SQLite keeps the declared
``BOOLEAN`` and reflection reads it as ``Boolean``. JSON documents (form
definitions, the canonical ``WireEnvelope``) are plain text, stored exactly as
they will be sent.

Other modules (uplink, outbox, downlink) import these table objects and write
their own queries against them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DefaultClause,
    Dialect,
    MetaData,
    String,
    Table,
    TypeDecorator,
    create_engine,
    inspect,
    text,
)
from sqlalchemy.engine import Inspector
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeEngine

from gateway.store import migration


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


@dataclass(frozen=True)
class Override:
    """What SQL cannot say about one column: its Python-side type and insert default."""

    type: TypeEngine[Any] | None = None
    default: Any = None


UTC_TIME = Override(UtcDateTime())

# table -> column -> override. Every other column is exactly as the migrations made it.
OVERRIDES: dict[str, dict[str, Override]] = {
    "activities": {
        "dispatched_at": UTC_TIME,
        "state": Override(default=OFFLINE),
        "checked_in_at": UTC_TIME,
        "recalled_at": UTC_TIME,
        "updated_at": UTC_TIME,
        "reopen_seq": Override(default=0),
        "reviewed_at": UTC_TIME,
    },
    "users": {"updated_at": UTC_TIME, "site_lead": Override(default=False)},
    "offline_types": {},
    "sessions": {"created_at": UTC_TIME, "expires_at": UTC_TIME},
    "signin_failures": {"last_at": UTC_TIME, "locked_until": UTC_TIME},
    "envelopes": {
        "created_at": UTC_TIME,  # the device's clock
        "received_at": UTC_TIME,  # the gateway's clock
        "sent_at": UTC_TIME,
        "result_at": UTC_TIME,  # central's clock: when it applied or rejected
        "attempts": Override(default=0),
    },
    "attachments": {
        "complete": Override(default=False),
        "created_at": UTC_TIME,
        "completed_at": UTC_TIME,
        "uploaded": Override(default=0),
        "uploaded_at": UTC_TIME,
    },
    "envelope_attachments": {},
    "form_versions": {"received_at": UTC_TIME},
    "meta": {},
}


class SchemaError(Exception):
    """The tables this code names do not match what the migrations create."""


def reflect(
    metadata: MetaData,
    overrides: Mapping[str, Mapping[str, Override]],
    steps: Sequence[migration.Step] | None = None,
) -> dict[str, Table]:
    """Run ``steps`` (default: every migration) in memory; reflect each table in ``overrides``."""
    raw = sqlite3.connect(":memory:", isolation_level=None)
    migration.run_steps(raw, 0, None, steps)
    engine = create_engine("sqlite://", creator=lambda: raw, poolclass=StaticPool)
    try:
        with engine.connect() as conn:
            inspector = inspect(conn)  # one, so each table's pragmas are read once
            return {
                name: _table(inspector, metadata, name, cols) for name, cols in overrides.items()
            }
    finally:
        engine.dispose()
        raw.close()


def _table(
    inspector: Inspector, metadata: MetaData, name: str, overrides: Mapping[str, Override]
) -> Table:
    if not inspector.has_table(name):
        raise SchemaError(f"table {name!r} is named in the code but no migration creates it")
    reflected = {c["name"]: c for c in inspector.get_columns(name)}
    keys = set(inspector.get_pk_constraint(name)["constrained_columns"])
    columns = []
    for column, override in overrides.items():
        if column not in reflected:
            raise SchemaError(f"override for {name}.{column}: no migration creates that column")
        found = reflected[column]
        sql_default = found.get("default")
        columns.append(
            Column(
                column,
                override.type if override.type is not None else found["type"],
                primary_key=column in keys,
                nullable=found["nullable"],
                default=override.default,
                server_default=DefaultClause(text(sql_default)) if sql_default else None,
            )
        )
    # An Inspector is a documented autoload_with (the stubs name only Engine and Connection).
    table: Table = Table(name, metadata, *columns, autoload_with=inspector)  # type: ignore[call-overload]
    return table


metadata = MetaData()
_tables = reflect(metadata, OVERRIDES)
activities = _tables["activities"]
users = _tables["users"]
offline_types = _tables["offline_types"]
sessions = _tables["sessions"]
signin_failures = _tables["signin_failures"]
envelopes = _tables["envelopes"]
attachments = _tables["attachments"]
envelope_attachments = _tables["envelope_attachments"]
form_versions = _tables["form_versions"]
meta = _tables["meta"]

# meta keys used by more than one module
META_LAST_SYNC = "last_sync"  # ISO time of the last exchange with central
