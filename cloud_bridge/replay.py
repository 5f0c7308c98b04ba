"""Replaying envelope batches into the central database, exactly once.

Each envelope is one unit of work: its ledger row and its record rows commit
together or not at all, and results leave only after the commit. Three ways
of committing, with the same outcomes (the tests run all three):

* bulk (the default, :mod:`cloud_bridge.bulk`): the batch is decided in
  memory under its activities' locks and written with a few statements in
  one transaction — a batch commits (or not) as a whole;
* ``bulk=False``: the ORM path below, a savepoint per envelope, one commit
  per batch;
* ``group_commit=False``: one transaction per envelope.

Per activity (and check-out), envelopes apply in ``seq`` order:

* ``seq == last_seq + 1``: decided now (applied or rejected), and any held
  successors are decided after it;
* ``seq > last_seq + 1``: a gap; the envelope is **held** in the ledger (no
  result yet) until the missing one arrives;
* ``seq <= last_seq`` with a new envelope id: rejected ``stale_seq``.

A rejected envelope consumes its seq, so the crew can send a corrected one
with the next seq. The envelope id is the idempotency key: the same id again
returns the first outcome and has no second effect (a held one stays held).

Everything here blocks; the bridge runs it in its DB threads.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from cloud_bridge.bulk import BulkBatch
from cloud_bridge.db import Database
from cloud_bridge.ledger import clip, reject_held, result_of
from cloud_bridge.models import (
    APPLIED,
    CANCELED,
    HELD,
    OFFLINE,
    ONLINE,
    REJECTED,
    Activity,
    ActivityType,
    LedgerEntry,
    Record,
    RecordRow,
    utcnow,
)
from cloud_bridge.rules import form_of, touch_gateway
from outpost.forms import FormDefinition, validate_submission
from outpost.wire.schemas import EnvelopeBatch, EnvelopeResult, WireEnvelope

logger = logging.getLogger(__name__)

# Rejection codes (see docs/central.md).
VALIDATION = "validation"
CONFLICT = "conflict"
PERMISSION = "permission"
UNKNOWN_ACTIVITY = "unknown_activity"
STALE_SEQ = "stale_seq"
CANCELED_CODE = "canceled"
CHECKED_IN = "checked_in"

Results = list[tuple[str, EnvelopeResult]]  # (gateway to tell, result)

_RETRIES = 5


class Replayer:
    """Applies envelope batches; one instance per bridge, thread-safe."""

    def __init__(self, db: Database, *, group_commit: bool = True, bulk: bool = True) -> None:
        """``bulk`` (default): decide the batch in memory, write it in a few statements.
        ``group_commit`` without ``bulk``: a savepoint per envelope, one commit per batch.
        Neither: one transaction per envelope (the slowest; the reference semantics).
        """
        self.db = db
        self.group_commit = group_commit
        self.bulk = bulk and group_commit

    # --- entry points -------------------------------------------------------

    def apply_batch(self, gateway_id: str, batch: EnvelopeBatch) -> Results:
        """Apply a batch that arrived from ``gateway_id``; results to send after it returns.

        Duplicates in the result list carry their first outcome; held envelopes
        have no result yet (they come out when their gap fills).
        """
        arrived = utcnow()
        # A stable lock order (activity, seq) keeps concurrent workers free of deadlocks.
        envelopes = sorted(batch.envelopes, key=lambda e: (e.activity_id, e.seq))
        batch_id = str(batch.batch_id)
        if self.bulk:
            results = self._retrying(
                lambda: self._batch_in_bulk(gateway_id, envelopes, batch_id, arrived)
            )
        elif self.group_commit:
            results = self._retrying(
                lambda: self._batch_in_one_transaction(gateway_id, envelopes, batch_id, arrived)
            )
        else:
            results = []
            for env in envelopes:
                results += self._retrying(
                    partial(self._envelope_in_own_transactions, gateway_id, env, batch_id, arrived)
                )
            with self.db.session() as session:
                touch_gateway(session, gateway_id, arrived)
        return results

    def apply_envelopes(self, gateway_id: str, envelopes: list[WireEnvelope]) -> Results:
        """Convenience for tests and tools: apply envelopes as one batch."""
        batch = EnvelopeBatch(
            gateway_id=gateway_id, batch_id=uuid.uuid4(), sent_at=utcnow(), envelopes=envelopes
        )
        return self.apply_batch(gateway_id, batch)

    # --- transactions ----------------------------------------------------------

    def _retrying(self, work: Callable[[], Results]) -> Results:
        for attempt in range(1, _RETRIES + 1):
            try:
                return work()
            except (IntegrityError, OperationalError) as exc:
                # A concurrent worker inserted the same envelope id, or the database
                # chose us as a deadlock/serialization victim: nothing committed, redo.
                if attempt == _RETRIES:
                    raise
                logger.info("replay retry %d after %s", attempt, exc.__class__.__name__)
                time.sleep(0.01 * attempt)
        raise AssertionError("unreachable")

    def _batch_in_bulk(
        self, gateway_id: str, envelopes: list[WireEnvelope], batch_id: str, arrived: datetime
    ) -> Results:
        with self.db.engine.begin() as conn:
            return BulkBatch(conn, gateway_id, envelopes, batch_id, arrived, _form_of_row).run()

    def _batch_in_one_transaction(
        self, gateway_id: str, envelopes: list[WireEnvelope], batch_id: str, arrived: datetime
    ) -> Results:
        results: Results = []
        with self.db.session() as session:
            # Prefetch for the whole batch: lock its activities (in id order, so workers
            # never deadlock), and learn which envelope ids and held work already exist.
            ids = sorted({e.activity_id for e in envelopes})
            stmt = select(Activity).where(Activity.id.in_(ids)).order_by(Activity.id)
            if not self.db.sqlite:
                stmt = stmt.with_for_update()
            locked = {a.id for a in session.scalars(stmt)}
            known = set(
                session.scalars(
                    select(LedgerEntry.envelope_id).where(
                        LedgerEntry.envelope_id.in_([str(e.envelope_id) for e in envelopes])
                    )
                )
            )
            holding = set(
                session.scalars(
                    select(LedgerEntry.activity_id)
                    .where(LedgerEntry.activity_id.in_(ids), LedgerEntry.outcome == HELD)
                    .distinct()
                )
            )
            cache = _BatchCache(locked, known, holding)
            for env in envelopes:
                with _unit(session, nested=True):
                    decided, activity_id = self._arrive(
                        session, gateway_id, env, batch_id, arrived, cache
                    )
                results += decided
                if activity_id is not None:
                    results += self._release(session, activity_id, nested=True)
            # Last, after every activity lock: the fleet view's "last seen".
            touch_gateway(session, gateway_id, arrived)
        return results

    def _envelope_in_own_transactions(
        self, gateway_id: str, env: WireEnvelope, batch_id: str, arrived: datetime
    ) -> Results:
        with self.db.session() as session:
            results, activity_id = self._arrive(session, gateway_id, env, batch_id, arrived)
        if activity_id is not None:
            session2 = self.db.new_session()
            with session2:
                results += self._release(session2, activity_id, nested=False)
        return results

    # --- one envelope ------------------------------------------------------------

    def _arrive(
        self,
        session: Session,
        gateway_id: str,
        env: WireEnvelope,
        batch_id: str,
        arrived: datetime,
        cache: _BatchCache | None = None,
    ) -> tuple[Results, str | None]:
        """Handle one arriving envelope; returns its results and the activity to release."""
        key = str(env.envelope_id)
        if cache is None:
            activity = _lock_activity(session, env.activity_id)
            existing = session.get(LedgerEntry, key)
        else:
            # Locked by the batch prefetch: the identity map has it (or it does not exist).
            activity = (
                session.get(Activity, env.activity_id) if env.activity_id in cache.locked else None
            )
            existing = session.get(LedgerEntry, key) if key in cache.known else None
            cache.known.add(key)
        if existing is not None:
            if existing.outcome == HELD:
                return [], None
            return [(gateway_id, result_of(existing))], None
        entry = _entry(env, gateway_id, batch_id, arrived)
        session.add(entry)
        if activity is None:
            _reject(entry, UNKNOWN_ACTIVITY, f"No activity {env.activity_id!r} exists at central.")
            session.flush()
            return [(gateway_id, result_of(entry))], None
        entry.checkout_no = activity.checkout_no
        entry.activity_version = activity.version
        refusal = _holder_refusal(activity, gateway_id)
        if refusal is not None:
            _reject(entry, *refusal)
            session.flush()
            return [(gateway_id, result_of(entry))], None
        if env.seq <= activity.last_seq:
            _reject(
                entry,
                STALE_SEQ,
                f"Sequence number {env.seq} of activity {activity.id!r} was already used; "
                f"the next one is {activity.last_seq + 1}.",
            )
            session.flush()
            return [(gateway_id, result_of(entry))], None
        if env.seq > activity.last_seq + 1:
            entry.outcome = HELD
            entry.payload = env.model_dump(mode="json")
            if cache is not None:
                cache.holding.add(activity.id)
            session.flush()
            logger.info(
                "holding envelope %s of activity %s: seq %d arrived, waiting for %d",
                key,
                activity.id,
                env.seq,
                activity.last_seq + 1,
            )
            return [], None
        _decide(session, activity, entry, env)
        session.flush()
        # Only look for held successors when there can be work for _release.
        if cache is not None and activity.id not in cache.holding:
            maybe_held = False
        else:
            maybe_held = _has_held(session, activity)
        release = activity.id if activity.state != OFFLINE or maybe_held else None
        return [(entry.gateway_id, result_of(entry))], release

    def _release(self, session: Session, activity_id: str, *, nested: bool) -> Results:
        """Decide held envelopes whose turn has come, each in its own unit."""
        results: Results = []
        while True:
            with _unit(session, nested=nested):
                activity = _lock_activity(session, activity_id)
                if activity is None:
                    return results
                if activity.state != OFFLINE:
                    # Checked in or canceled: anything still held can never apply.
                    results += reject_held(
                        session,
                        activity,
                        CHECKED_IN if activity.state == ONLINE else CANCELED_CODE,
                        f"Activity {activity_id!r} was checked in (or canceled) before this "
                        "envelope's turn came.",
                    )
                    return results
                entry = session.scalars(
                    select(LedgerEntry).where(
                        LedgerEntry.activity_id == activity_id,
                        LedgerEntry.checkout_no == activity.checkout_no,
                        LedgerEntry.seq == activity.last_seq + 1,
                        LedgerEntry.outcome == HELD,
                    )
                ).first()
                if entry is None:
                    return results
                assert entry.payload is not None
                env = WireEnvelope.model_validate(entry.payload)
                refusal = _holder_refusal(activity, entry.gateway_id)
                if refusal is not None:
                    _reject(entry, *refusal)
                    activity.last_seq = entry.seq
                else:
                    _decide(session, activity, entry, env)
                entry.payload = None
                session.flush()
                results.append((entry.gateway_id, result_of(entry)))


@dataclass
class _BatchCache:
    locked: set[str]  # activity ids locked (and loaded) for this batch
    known: set[str]  # envelope ids already in the ledger (or added by this batch)
    holding: set[str]  # activities that have (or may have) held envelopes


@contextmanager
def _unit(session: Session, *, nested: bool) -> Iterator[None]:
    """One envelope's unit of work: a savepoint, or a whole transaction."""
    if nested:
        with session.begin_nested():
            yield
    else:
        with session.begin():
            yield


def _has_held(session: Session, activity: Activity) -> bool:
    return (
        session.scalar(
            select(LedgerEntry.envelope_id)
            .where(
                LedgerEntry.activity_id == activity.id,
                LedgerEntry.checkout_no == activity.checkout_no,
                LedgerEntry.outcome == HELD,
            )
            .limit(1)
        )
        is not None
    )


def _lock_activity(session: Session, activity_id: str) -> Activity | None:
    stmt = (
        select(Activity).where(Activity.id == activity_id).execution_options(populate_existing=True)
    )
    if session.get_bind().dialect.name != "sqlite":
        stmt = stmt.with_for_update()
    return session.scalars(stmt).first()


def _entry(env: WireEnvelope, gateway_id: str, batch_id: str, arrived: datetime) -> LedgerEntry:
    return LedgerEntry(
        envelope_id=str(env.envelope_id),
        gateway_id=gateway_id,
        activity_id=env.activity_id,
        checkout_no=0,
        seq=env.seq,
        base_version=env.base_version,
        status=env.status,
        author=env.author,
        form_version=env.form_version,
        outcome=HELD,
        created_at=env.created_at,
        received_at=env.received_at,
        arrived_at=arrived,
        checked_in=False,
        batch_id=batch_id,
        attachments=list(env.attachments),
    )


def _reject(entry: LedgerEntry, code: str, reason: str) -> None:
    entry.outcome = REJECTED
    entry.code = code
    entry.reason = clip(reason)
    entry.applied_at = utcnow()


def _holder_refusal(activity: Activity, gateway_id: str) -> tuple[str, str] | None:
    if activity.state == CANCELED:
        return CANCELED_CODE, f"Activity {activity.id!r} was canceled by central."
    if activity.state != OFFLINE or activity.holder_gateway != gateway_id:
        return (
            PERMISSION,
            f"Activity {activity.id!r} is not checked out to gateway {gateway_id!r}.",
        )
    return None


_forms: dict[tuple[str, int, datetime], FormDefinition] = {}


def _form(activity_type: ActivityType) -> FormDefinition:
    """The parsed form of a type's current version (parsed once, not per envelope)."""
    key = (activity_type.name, activity_type.form_version, activity_type.updated_at)
    form = _forms.get(key)
    if form is None:
        if len(_forms) > 1000:
            _forms.clear()
        form = _forms[key] = form_of(activity_type)
    return form


def _form_of_row(row: Any) -> FormDefinition:
    key = (row["name"], row["form_version"], row["updated_at"])
    form = _forms.get(key)
    if form is None:
        if len(_forms) > 1000:
            _forms.clear()
        form = _forms[key] = FormDefinition.model_validate(row["form"])
    return form


def _decide(session: Session, activity: Activity, entry: LedgerEntry, env: WireEnvelope) -> None:
    """Apply or reject the envelope whose seq is next; it consumes the seq either way."""
    activity.last_seq = env.seq
    entry.activity_version = activity.version
    if env.author not in (activity.holder_user, activity.responsible):
        _reject(
            entry,
            PERMISSION,
            f"User {env.author!r} may not submit for activity {activity.id!r}; "
            f"it is held by {activity.holder_user!r}.",
        )
        return
    if env.base_version != activity.version:
        _reject(
            entry,
            CONFLICT,
            f"The envelope was edited from version {env.base_version} of activity "
            f"{activity.id!r}, but central has version {activity.version}; "
            "it was not applied so nothing is overwritten.",
        )
        return
    activity_type = session.get(ActivityType, activity.type)
    assert activity_type is not None
    problems = validate_submission(
        _form(activity_type),
        env.record,
        env.tables,
        list(env.attachments),
        complete=env.status == "completed",
    )
    if problems:
        note = ""
        if env.form_version != activity_type.form_version:
            note = (
                f" (filled against form version {env.form_version}; "
                f"central has {activity_type.form_version})"
            )
        _reject(entry, VALIDATION, "; ".join(problems) + note)
        return
    now = utcnow()
    record = session.get(Record, activity.id)
    if record is None:
        record = Record(activity_id=activity.id)
        session.add(record)
    record.data = dict(env.record)
    record.envelope_id = str(env.envelope_id)
    record.seq = env.seq
    record.status = env.status
    record.attachments = list(env.attachments)
    record.form_version = env.form_version
    record.updated_at = now
    session.execute(delete(RecordRow).where(RecordRow.activity_id == activity.id))
    rows = [
        {"activity_id": activity.id, "table_name": name, "row_index": i, "data": row}
        for name, table_rows in env.tables.items()
        for i, row in enumerate(table_rows)
    ]
    if rows:
        session.execute(insert(RecordRow), rows)
    entry.outcome = APPLIED
    entry.code = None
    entry.reason = None
    entry.applied_at = now
    if env.status == "completed":
        # Rule 5: checked in — back online, off the gateway, version bumped.
        activity.state = ONLINE
        activity.holder_gateway = None
        activity.holder_user = None
        activity.version += 1
        entry.checked_in = True
    activity.updated_at = now
    entry.activity_version = activity.version
