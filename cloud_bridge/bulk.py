"""Group commit for replay: decide a whole batch under its locks, then write it in bulk.

The same rules as the per-envelope path in :mod:`cloud_bridge.replay` (the
reference; both run the same tests), with far fewer round trips: the batch's
activities are locked and read once, every envelope is decided in memory in
``seq`` order (held ones included), and then the ledger rows, the activities,
the records and their child rows are written with a handful of statements in
the same transaction. Each envelope's ledger row and its record rows still
commit together or not at all — the whole batch commits as one.

Within one batch an activity's record is written once, as the last applied
envelope left it: every envelope holds the whole form, so the intermediate
states would be overwritten inside the same transaction anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Table, bindparam, delete, insert, select, update

from cloud_bridge.ledger import clip
from cloud_bridge.models import (
    APPLIED,
    CANCELED,
    HELD,
    OFFLINE,
    ONLINE,
    REJECTED,
    Activity,
    ActivityType,
    Gateway,
    LedgerEntry,
    Record,
    RecordRow,
)
from outpost.forms import FormDefinition, validate_submission
from outpost.wire.schemas import EnvelopeResult, WireEnvelope

_activities: Table = Activity.__table__  # type: ignore[assignment]
_types: Table = ActivityType.__table__  # type: ignore[assignment]
_ledger: Table = LedgerEntry.__table__  # type: ignore[assignment]
_records: Table = Record.__table__  # type: ignore[assignment]
_rows: Table = RecordRow.__table__  # type: ignore[assignment]
_gateways: Table = Gateway.__table__  # type: ignore[assignment]

Results = list[tuple[str, EnvelopeResult]]


@dataclass
class _Act:
    id: str
    type: str
    responsible: str
    state: str
    holder_gateway: str | None
    holder_user: str | None
    checkout_no: int
    last_seq: int
    version: int
    dirty: bool = False
    record: WireEnvelope | None = None  # the last envelope applied in this batch
    held: dict[int, tuple[dict[str, Any], WireEnvelope, bool]] = field(default_factory=dict)
    # seq -> (ledger row values, envelope, row already in the database)


def _result(entry: dict[str, Any]) -> EnvelopeResult:
    return EnvelopeResult(
        envelope_id=UUID(entry["envelope_id"]),
        activity_id=entry["activity_id"],
        outcome="applied" if entry["outcome"] == APPLIED else "rejected",
        code=entry.get("code"),
        reason=entry.get("reason"),
        applied_at=entry["applied_at"],
        activity_version=entry.get("activity_version"),
        checked_in=bool(entry.get("checked_in")),
    )


def _entry(env: WireEnvelope, gateway_id: str, batch_id: str, arrived: datetime) -> dict[str, Any]:
    return {
        "envelope_id": str(env.envelope_id),
        "gateway_id": gateway_id,
        "activity_id": env.activity_id,
        "checkout_no": 0,
        "seq": env.seq,
        "base_version": env.base_version,
        "status": env.status,
        "author": env.author,
        "form_version": env.form_version,
        "outcome": HELD,
        "code": None,
        "reason": None,
        "created_at": env.created_at,
        "received_at": env.received_at,
        "arrived_at": arrived,
        "applied_at": None,
        "activity_version": None,
        "checked_in": False,
        "batch_id": batch_id,
        "attachments": list(env.attachments),
        "payload": None,
    }


class BulkBatch:
    """One batch's work inside one open transaction (``conn``)."""

    def __init__(
        self,
        conn: Connection,
        gateway_id: str,
        envelopes: list[WireEnvelope],
        batch_id: str,
        arrived: datetime,
        form_of: Any,
    ) -> None:
        self.conn = conn
        self.gateway_id = gateway_id
        self.envelopes = envelopes
        self.batch_id = batch_id
        self.now = arrived
        self.form_of = form_of  # (type name, form json, form_version, updated_at) -> FormDefinition
        self.results: Results = []
        self.inserts: dict[str, dict[str, Any]] = {}  # new ledger rows, by envelope id
        self.updates: list[dict[str, Any]] = []  # decided rows that were held in the database
        self.acts: dict[str, _Act] = {}
        self.forms: dict[str, tuple[FormDefinition, int]] = {}

    # --- reading ------------------------------------------------------------------

    def _load(self) -> dict[str, dict[str, Any]]:
        conn = self.conn
        ids = sorted({e.activity_id for e in self.envelopes})
        stmt = select(_activities).where(_activities.c.id.in_(ids)).order_by(_activities.c.id)
        if conn.dialect.name != "sqlite":
            stmt = stmt.with_for_update()  # in id order: concurrent workers never deadlock
        for r in conn.execute(stmt).mappings():
            self.acts[r["id"]] = _Act(
                id=r["id"],
                type=r["type"],
                responsible=r["responsible"],
                state=r["state"],
                holder_gateway=r["holder_gateway"],
                holder_user=r["holder_user"],
                checkout_no=r["checkout_no"],
                last_seq=r["last_seq"],
                version=r["version"],
            )
        keys = [str(e.envelope_id) for e in self.envelopes]
        existing = {
            r["envelope_id"]: dict(r)
            for r in conn.execute(select(_ledger).where(_ledger.c.envelope_id.in_(keys))).mappings()
        }
        if self.acts:
            held = conn.execute(
                select(_ledger).where(
                    _ledger.c.activity_id.in_(list(self.acts)), _ledger.c.outcome == HELD
                )
            ).mappings()
            for r in held:
                act = self.acts[r["activity_id"]]
                if r["checkout_no"] == act.checkout_no and r["payload"] is not None:
                    act.held[r["seq"]] = (dict(r), WireEnvelope.model_validate(r["payload"]), True)
            type_names = sorted({a.type for a in self.acts.values()})
            for t in conn.execute(select(_types).where(_types.c.name.in_(type_names))).mappings():
                self.forms[t["name"]] = (self.form_of(t), t["form_version"])
        return existing

    # --- deciding -------------------------------------------------------------------

    def run(self) -> Results:
        existing = self._load()
        for env in self.envelopes:
            key = str(env.envelope_id)
            known = existing.get(key) or self.inserts.get(key)
            if known is not None:
                if known["outcome"] != HELD:
                    self.results.append((self.gateway_id, _result(known)))
                continue
            entry = _entry(env, self.gateway_id, self.batch_id, self.now)
            self.inserts[key] = entry
            act = self.acts.get(env.activity_id)
            if act is None:
                self._reject(
                    entry, "unknown_activity", f"No activity {env.activity_id!r} exists at central."
                )
                continue
            entry["checkout_no"] = act.checkout_no
            entry["activity_version"] = act.version
            refusal = _holder_refusal(act, self.gateway_id)
            if refusal is not None:
                self._reject(entry, *refusal)
                continue
            if env.seq <= act.last_seq:
                self._reject(
                    entry,
                    "stale_seq",
                    f"Sequence number {env.seq} of activity {act.id!r} was already used; "
                    f"the next one is {act.last_seq + 1}.",
                )
                continue
            if env.seq > act.last_seq + 1:
                entry["payload"] = env.model_dump(mode="json")
                act.held[env.seq] = (entry, env, False)
                continue
            self._decide(act, entry, env)
            self._release(act)
        self._write()
        return self.results

    def _reject(self, entry: dict[str, Any], code: str, reason: str) -> None:
        entry["outcome"] = REJECTED
        entry["code"] = code
        entry["reason"] = clip(reason)
        entry["applied_at"] = self.now
        self.results.append((entry["gateway_id"], _result(entry)))

    def _decide(self, act: _Act, entry: dict[str, Any], env: WireEnvelope) -> None:
        act.last_seq = env.seq
        act.dirty = True
        entry["activity_version"] = act.version
        if env.author not in (act.holder_user, act.responsible):
            self._reject(
                entry,
                "permission",
                f"User {env.author!r} may not submit for activity {act.id!r}; "
                f"it is held by {act.holder_user!r}.",
            )
            return
        if env.base_version != act.version:
            self._reject(
                entry,
                "conflict",
                f"The envelope was edited from version {env.base_version} of activity "
                f"{act.id!r}, but central has version {act.version}; "
                "it was not applied so nothing is overwritten.",
            )
            return
        form, form_version = self.forms[act.type]
        problems = validate_submission(
            form,
            env.record,
            env.tables,
            list(env.attachments),
            complete=env.status == "completed",
        )
        if problems:
            note = ""
            if env.form_version != form_version:
                note = (
                    f" (filled against form version {env.form_version}; central has {form_version})"
                )
            self._reject(entry, "validation", "; ".join(problems) + note)
            return
        act.record = env
        if env.status == "completed":
            act.state = ONLINE
            act.holder_gateway = None
            act.holder_user = None
            act.version += 1
            entry["checked_in"] = True
        entry["outcome"] = APPLIED
        entry["applied_at"] = self.now
        entry["activity_version"] = act.version
        self.results.append((entry["gateway_id"], _result(entry)))

    def _release(self, act: _Act) -> None:
        """Decide held successors whose turn came; reject the rest once checked in."""
        while act.state == OFFLINE and act.last_seq + 1 in act.held:
            entry, env, stored = act.held.pop(act.last_seq + 1)
            refusal = _holder_refusal(act, entry["gateway_id"])
            if refusal is not None:
                act.last_seq = env.seq
                act.dirty = True
                self._reject(entry, *refusal)
            else:
                self._decide(act, entry, env)
            self._decided_held(entry, stored)
        if act.state != OFFLINE and act.held:
            code = "checked_in" if act.state == ONLINE else "canceled"
            for seq in sorted(act.held):
                entry, _env, stored = act.held.pop(seq)
                entry["activity_version"] = act.version
                self._reject(
                    entry,
                    code,
                    f"Activity {act.id!r} was checked in (or canceled) before this "
                    "envelope's turn came.",
                )
                self._decided_held(entry, stored)

    def _decided_held(self, entry: dict[str, Any], stored: bool) -> None:
        entry["payload"] = None
        if stored:
            self.updates.append(entry)

    # --- writing --------------------------------------------------------------------

    def _write(self) -> None:
        conn = self.conn
        if self.inserts:
            conn.execute(insert(_ledger), list(self.inserts.values()))
        if self.updates:
            conn.execute(
                update(_ledger)
                .where(_ledger.c.envelope_id == bindparam("k_envelope_id"))
                .values(
                    outcome=bindparam("k_outcome"),
                    code=bindparam("k_code"),
                    reason=bindparam("k_reason"),
                    applied_at=bindparam("k_applied_at"),
                    activity_version=bindparam("k_activity_version"),
                    checked_in=bindparam("k_checked_in"),
                    payload=None,
                ),
                [
                    {
                        f"k_{k}": u[k]
                        for k in (
                            "envelope_id",
                            "outcome",
                            "code",
                            "reason",
                            "applied_at",
                            "activity_version",
                            "checked_in",
                        )
                    }
                    for u in self.updates
                ],
            )
        dirty = [a for a in self.acts.values() if a.dirty]
        if dirty:
            conn.execute(
                update(_activities)
                .where(_activities.c.id == bindparam("k_id"))
                .values(
                    state=bindparam("k_state"),
                    holder_gateway=bindparam("k_holder_gateway"),
                    holder_user=bindparam("k_holder_user"),
                    last_seq=bindparam("k_last_seq"),
                    version=bindparam("k_version"),
                    updated_at=bindparam("k_updated_at"),
                ),
                [
                    {
                        "k_id": a.id,
                        "k_state": a.state,
                        "k_holder_gateway": a.holder_gateway,
                        "k_holder_user": a.holder_user,
                        "k_last_seq": a.last_seq,
                        "k_version": a.version,
                        "k_updated_at": self.now,
                    }
                    for a in dirty
                ],
            )
        applied = [a for a in self.acts.values() if a.record is not None]
        if applied:
            ids = [a.id for a in applied]
            conn.execute(delete(_rows).where(_rows.c.activity_id.in_(ids)))
            conn.execute(delete(_records).where(_records.c.activity_id.in_(ids)))
            records = []
            rows = []
            for a in applied:
                env = a.record
                assert env is not None
                records.append(
                    {
                        "activity_id": a.id,
                        "data": dict(env.record),
                        "envelope_id": str(env.envelope_id),
                        "seq": env.seq,
                        "status": env.status,
                        "attachments": list(env.attachments),
                        "form_version": env.form_version,
                        "updated_at": self.now,
                    }
                )
                rows += [
                    {"activity_id": a.id, "table_name": name, "row_index": i, "data": row}
                    for name, table_rows in env.tables.items()
                    for i, row in enumerate(table_rows)
                ]
            conn.execute(insert(_records), records)
            if rows:
                conn.execute(insert(_rows), rows)
        self._touch_gateway()

    def _touch_gateway(self) -> None:
        conn = self.conn
        found = conn.execute(
            select(_gateways.c.last_seen).where(_gateways.c.id == self.gateway_id)
        ).first()
        if found is None:
            conn.execute(
                insert(_gateways).values(
                    id=self.gateway_id,
                    first_seen=self.now,
                    last_seen=self.now,
                    state="unknown",
                )
            )
        else:
            conn.execute(
                update(_gateways)
                .where(_gateways.c.id == self.gateway_id, _gateways.c.last_seen < self.now)
                .values(last_seen=self.now)
            )


def _holder_refusal(act: _Act, gateway_id: str) -> tuple[str, str] | None:
    if act.state == CANCELED:
        return "canceled", f"Activity {act.id!r} was canceled by central."
    if act.state != OFFLINE or act.holder_gateway != gateway_id:
        return "permission", f"Activity {act.id!r} is not checked out to gateway {gateway_id!r}."
    return None
