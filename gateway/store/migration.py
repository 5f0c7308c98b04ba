"""Numbered schema migrations, tracked in ``PRAGMA user_version``.

Opening the database: a file that is not a healthy SQLite database is moved
aside (with its ``-wal``/``-shm``) and logged loudly, never silently reused; a
file whose schema is older is backed up (SQLite backup API) before the
numbered steps run, each in its own transaction and logged; a file newer than
this code refuses to start.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

logger = logging.getLogger(__name__)


class StoreError(Exception):
    """The database cannot be opened as it is; ``str()`` is one sentence for a person."""


_SCHEMA_1 = """
CREATE TABLE activities (
    id VARCHAR(64) NOT NULL,
    title VARCHAR(300) NOT NULL,
    type VARCHAR(64) NOT NULL,
    form TEXT NOT NULL,
    form_version INTEGER NOT NULL,
    responsible VARCHAR(64) NOT NULL,
    version INTEGER NOT NULL,
    holder VARCHAR(64) NOT NULL,
    dispatched_at VARCHAR(32) NOT NULL,
    state VARCHAR(16) NOT NULL,
    checked_in_at VARCHAR(32),
    recalled_at VARCHAR(32),
    recall_reason TEXT,
    updated_at VARCHAR(32) NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX ix_activities_holder ON activities (holder, state);
CREATE INDEX ix_activities_responsible ON activities (responsible, state);
CREATE TABLE attachments (
    sha256 VARCHAR(64) NOT NULL,
    size INTEGER NOT NULL,
    received INTEGER NOT NULL,
    complete BOOLEAN NOT NULL,
    path TEXT,
    uploaded_by VARCHAR(64),
    created_at VARCHAR(32) NOT NULL,
    completed_at VARCHAR(32),
    PRIMARY KEY (sha256)
);
CREATE TABLE meta (
    "key" VARCHAR(64) NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY ("key")
);
CREATE TABLE offline_types (
    name VARCHAR(64) NOT NULL,
    PRIMARY KEY (name)
);
CREATE TABLE sessions (
    token_hash VARCHAR(64) NOT NULL,
    username VARCHAR(64) NOT NULL,
    client VARCHAR(200),
    created_at VARCHAR(32) NOT NULL,
    expires_at VARCHAR(32) NOT NULL,
    PRIMARY KEY (token_hash)
);
CREATE INDEX ix_sessions_username ON sessions (username);
CREATE TABLE signin_failures (
    "key" VARCHAR(300) NOT NULL,
    failures INTEGER NOT NULL,
    last_at VARCHAR(32) NOT NULL,
    locked_until VARCHAR(32),
    PRIMARY KEY ("key")
);
CREATE TABLE users (
    username VARCHAR(64) NOT NULL,
    password_hash VARCHAR(512) NOT NULL,
    offline BOOLEAN NOT NULL,
    display_name VARCHAR(200),
    updated_at VARCHAR(32) NOT NULL,
    PRIMARY KEY (username)
);
CREATE TABLE envelopes (
    envelope_id VARCHAR(36) NOT NULL,
    activity_id VARCHAR(64) NOT NULL,
    author VARCHAR(64) NOT NULL,
    seq INTEGER NOT NULL,
    status VARCHAR(16) NOT NULL,
    base_version INTEGER NOT NULL,
    created_at VARCHAR(32) NOT NULL,
    received_at VARCHAR(32) NOT NULL,
    form_version INTEGER NOT NULL,
    body TEXT NOT NULL,
    body_hash VARCHAR(64) NOT NULL,
    size INTEGER NOT NULL,
    state VARCHAR(16) NOT NULL,
    code VARCHAR(64),
    reason TEXT,
    sent_at VARCHAR(32),
    result_at VARCHAR(32),
    batch_id VARCHAR(36),
    attempts INTEGER NOT NULL,
    PRIMARY KEY (envelope_id),
    FOREIGN KEY(activity_id) REFERENCES activities (id)
);
CREATE UNIQUE INDEX ix_envelopes_activity_seq ON envelopes (activity_id, seq);
CREATE INDEX ix_envelopes_batch ON envelopes (batch_id);
CREATE INDEX ix_envelopes_state_received ON envelopes (state, received_at);
"""


def _step_1_initial(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_1.split(";"):
        if statement.strip():
            conn.execute(statement)


def _step_2_completed_lock_index(conn: sqlite3.Connection) -> None:
    # "Is this activity completed?" runs on every submission; without this
    # index it read every envelope of the activity (8 ms at 5,000 envelopes,
    # 8 us with it).
    conn.execute(
        "CREATE INDEX ix_envelopes_activity_status ON envelopes (activity_id, status, state)"
    )


def _step_3_attachment_upload(conn: sqlite3.Connection) -> None:
    # Attachments now travel to central: remember how far each got, and which
    # envelopes reference which blobs (backfilled from the stored bodies).
    for statement in (
        "ALTER TABLE attachments ADD COLUMN uploaded INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE attachments ADD COLUMN uploaded_at VARCHAR(32)",
        "ALTER TABLE attachments ADD COLUMN upload_error TEXT",
        "CREATE INDEX ix_attachments_to_upload ON attachments (completed_at) "
        "WHERE uploaded_at IS NULL",
        "CREATE TABLE envelope_attachments ("
        " envelope_id VARCHAR(36) NOT NULL, sha256 VARCHAR(64) NOT NULL,"
        " PRIMARY KEY (envelope_id, sha256))",
        "CREATE INDEX ix_envelope_attachments_sha256 ON envelope_attachments (sha256)",
        "INSERT OR IGNORE INTO envelope_attachments (envelope_id, sha256)"
        " SELECT e.envelope_id, j.value FROM envelopes e, json_each(e.body, '$.attachments') j",
    ):
        conn.execute(statement)


def _step_4_site_lead(conn: sqlite3.Connection) -> None:
    # Central grants a site lead per gateway; the lead sees the whole gateway's state.
    conn.execute("ALTER TABLE users ADD COLUMN site_lead BOOLEAN NOT NULL DEFAULT 0")


def _step_5_review_rounds(conn: sqlite3.Connection) -> None:
    # Central can send a completed activity back with a reviewer's note; a new
    # round of field work starts after the envelopes of the last one.
    for statement in (
        "ALTER TABLE activities ADD COLUMN reopen_seq INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE activities ADD COLUMN review_round INTEGER",
        "ALTER TABLE activities ADD COLUMN review_note TEXT",
        "ALTER TABLE activities ADD COLUMN review_by VARCHAR(200)",
        "ALTER TABLE activities ADD COLUMN reviewed_at VARCHAR(32)",
    ):
        conn.execute(statement)


def _step_6_form_versions(conn: sqlite3.Connection) -> None:
    # Every form version the gateway was sent for an activity, not only the
    # newest: a draft begun on version 1 is checked against version 1 after
    # version 2 arrived. An activity names the newest it was sent
    # (``form_version``); its definitions live here only.
    for statement in (
        "CREATE TABLE form_versions ("
        " activity_id VARCHAR(64) NOT NULL, form_version INTEGER NOT NULL, form TEXT NOT NULL,"
        " received_at VARCHAR(32) NOT NULL, PRIMARY KEY (activity_id, form_version))",
        "INSERT INTO form_versions (activity_id, form_version, form, received_at)"
        " SELECT id, form_version, form, updated_at FROM activities",
        "ALTER TABLE activities DROP COLUMN form",
    ):
        conn.execute(statement)


# (version, description, step). Never edit a released step: add a new one.
MIGRATIONS: list[tuple[int, str, Callable[[sqlite3.Connection], None]]] = [
    (1, "initial schema", _step_1_initial),
    (2, "index for the completed-activity check", _step_2_completed_lock_index),
    (3, "attachment upload to central", _step_3_attachment_upload),
    (4, "site lead per user", _step_4_site_lead),
    (5, "review rounds: an activity sent back with a note", _step_5_review_rounds),
    (6, "every form version received, not only the newest", _step_6_form_versions),
]
LATEST = MIGRATIONS[-1][0]


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _move_aside(path: Path, why: str) -> Path:
    target = path.with_name(f"{path.name}.corrupt-{_stamp()}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            src.rename(Path(str(target) + suffix))
    logger.error(
        "database %s is unusable (%s); moved aside to %s and starting a new one "
        "(restore from the replica to recover its data)",
        path,
        why,
        target,
    )
    return target


def _health(path: Path) -> str | None:
    """None when the file is a healthy SQLite database, else what is wrong."""
    try:
        conn = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        conn.close()
    if rows != [("ok",)]:
        return "; ".join(str(r[0]) for r in rows[:3])
    return None


def _backup(conn: sqlite3.Connection, path: Path, version: int) -> Path:
    target = path.with_name(f"{path.name}.v{version}-{_stamp()}.bak")
    dest = sqlite3.connect(target)
    try:
        conn.backup(dest)
    finally:
        dest.close()
    logger.info("backed up %s (schema %d) to %s before migrating", path, version, target)
    return target


def prepare(path: Path) -> int:
    """Make ``path`` a healthy database at the latest schema; return the version found."""
    try:
        return _prepare(path)
    except (sqlite3.OperationalError, PermissionError) as exc:
        raise StoreError(
            f"cannot open the database {path}: {exc} "
            "(does the data directory exist, with room, writable by this user?)"
        ) from exc


def _prepare(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size > 0:
        problem = _health(path)
        if problem is not None:
            _move_aside(path, problem)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=OFF")  # table rebuilds in steps need it off
        found = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if found > LATEST:
            raise StoreError(
                f"database {path} has schema version {found}, newer than this gateway "
                f"supports ({LATEST}); install the newer gateway or restore an older replica"
            )
        if found == LATEST:
            return found
        if found > 0:
            _backup(conn, path, found)
        run_steps(conn, found, str(path))
        return found
    finally:
        conn.close()


Step = tuple[int, str, Callable[[sqlite3.Connection], None]]


def run_steps(
    conn: sqlite3.Connection, found: int, name: str | None, steps: Sequence[Step] | None = None
) -> None:
    """Run every step (of ``MIGRATIONS`` unless given) after ``found``, each in its own transaction.

    Each step is logged with the database's ``name``; ``None`` (a scratch
    database) logs nothing.

    ``gateway.store.schema`` runs them all on an in-memory database to learn
    the tables, so a step is the one place a table or column is written.
    """
    for version, description, step in MIGRATIONS if steps is None else steps:
        if version <= found:
            continue
        if name is not None:
            logger.info("migrating %s to schema %d: %s", name, version, description)
        conn.execute("BEGIN IMMEDIATE")
        try:
            step(conn)
            conn.execute(f"PRAGMA user_version={version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
