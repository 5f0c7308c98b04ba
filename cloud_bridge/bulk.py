"""The rules of replay, applied to one or more batches inside one open transaction.

:class:`BulkBatch` takes the batches of a commit group (:class:`Part`, one
per batch, possibly from many gateways: :mod:`cloud_bridge.groupcommit`) and
has three phases: **load** locks the group's activities
(in id order, so concurrent workers never deadlock) and reads them, the
ledger rows the batch already has, the activities' held envelopes and their
forms, in a handful of queries; **decide** runs every envelope through the
rules in memory, in ``seq`` order, held ones included; **write** puts the
ledger rows, activities, records and child rows in with a few statements.
The caller commits (or rolls back) the whole group; results leave only after
that commit (:mod:`cloud_bridge.replay`). Batches are decided in the order
given, so a gateway's batches keep their order; each gets its own results.

The rules, per activity and check-out:

* an envelope id already in the ledger gets its first outcome again (a held
  one stays held, without a result);
* no such activity: rejected ``unknown_activity``; not checked out to the
  sending gateway: ``permission`` (``canceled`` once central canceled it);
* ``seq <= last_seq``: ``stale_seq``; ``seq > last_seq + 1``: a gap, the
  envelope is **held** in the ledger until the missing one arrives;
* ``seq == last_seq + 1``: its turn. It is decided (applied, or rejected
  ``permission``/``conflict``/``validation``) and consumes its seq either
  way, so the crew can send a corrected one with the next; then held
  successors whose turn came are decided in order. Once the activity is
  checked in (a ``completed`` envelope applied) or canceled, anything still
  held is rejected ``checked_in``/``canceled``.

An envelope central refused before the rules (``refused``: it fails the wire
contract, or the database refused a value in it) arrives as a placeholder
that holds only what can be stored. It meets the same rules, and at its turn
it is rejected with its refusal instead of being decided; with no usable
``seq`` (0) it is rejected on arrival and consumes nothing.

Within one group an activity's record is written once, as the last applied
envelope left it: every envelope holds the whole form, so the intermediate
states would be overwritten inside the same transaction anyway.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    ARRAY,
    Connection,
    RowMapping,
    Table,
    Text,
    bindparam,
    delete,
    func,
    select,
    true,
    update,
)

from cloud_bridge import group_sql, rejections
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
    ActivityTypeVersion,
    Gateway,
    LedgerEntry,
    Record,
    RecordRow,
)
from cloud_bridge.rejections import Refusal
from cloud_bridge.rules import new_gateway_row
from outpost.forms import FormDefinition, validate_submission
from outpost.wire.schemas import EnvelopeResult, WireEnvelope

_activities: Table = Activity.__table__  # type: ignore[assignment]
_types: Table = ActivityType.__table__  # type: ignore[assignment]
_versions: Table = ActivityTypeVersion.__table__  # type: ignore[assignment]
_ledger: Table = LedgerEntry.__table__  # type: ignore[assignment]
_records: Table = Record.__table__  # type: ignore[assignment]
_rows: Table = RecordRow.__table__  # type: ignore[assignment]
_gateways: Table = Gateway.__table__  # type: ignore[assignment]

Results = list[tuple[str, EnvelopeResult]]  # (gateway to tell, result)
Entry = dict[str, Any]  # a ledger row's values

_UPDATED_LEDGER = ("outcome", "code", "reason", "applied_at", "activity_version", "checked_in")


@dataclass
class _Held:
    entry: Entry
    env: WireEnvelope | None  # None: a refused placeholder (rejected at its turn)
    stored: bool  # the row is in the database already (else in this batch's inserts)
    refusal: Refusal | None = None


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
    held: dict[int, _Held] = field(default_factory=dict)  # by seq


@dataclass
class Part:
    """One batch of a commit group: what arrived, and (after the run) its results."""

    gateway_id: str
    batch_id: str
    envelopes: list[WireEnvelope]  # in (activity_id, seq) order
    arrived: datetime  # when the bridge received it (the ledger's arrived_at)
    refused: Mapping[str, Refusal] = field(default_factory=dict)
    results: Results = field(default_factory=list)
    error: Exception | None = None  # why it could not be applied (nothing of it committed)

    def alone(self, env: WireEnvelope, refused: Mapping[str, Refusal]) -> Part:
        """This batch's one envelope, as a part of its own (poison isolation)."""
        return Part(self.gateway_id, self.batch_id, [env], self.arrived, refused)


def _result(entry: Entry) -> EnvelopeResult:
    """The answer recorded for a decided envelope (the same every time it is asked)."""
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


def _entry(env: WireEnvelope, gateway_id: str, batch_id: str, arrived: datetime) -> Entry:
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


_forms: dict[tuple[str, int, datetime], FormDefinition] = {}


def _form_of(row: RowMapping) -> FormDefinition:
    """The parsed form of a type's current version (parsed once, not per batch)."""
    key = (row["name"], row["form_version"], row["updated_at"])
    form = _forms.get(key)
    if form is None:
        if len(_forms) > 1000:
            _forms.clear()
        form = _forms[key] = FormDefinition.model_validate(row["form"])
    return form


# A kept form version never changes: parsed once per (type, version).
_old_forms: dict[tuple[str, int], FormDefinition] = {}


@dataclass(frozen=True)
class _Statements:
    """A group's queries, built once per database kind, their values bound at execution."""

    activities: Any  # lock and read the group's activities (:ids)
    ledger_rows: Any  # the ledger rows of these envelope ids (:keys)
    held: Any  # the held envelopes of these activities (:ids)
    types: Any  # the activity types (:names)
    delete_rows: Any  # the child rows of these activities' records (:ids)
    delete_records: Any  # these activities' records (:ids)
    gateways: Any  # lock the sending gateways' rows (:ids)
    touch_gateways: Any  # their "last seen" (:ids, :now)


@functools.cache
def _statements(dialect: str) -> _Statements:
    """Built once: building a SELECT cost more of the worker's Python than running it.

    The ledger rows are found through the primary key, on PostgreSQL one index
    probe per id (a LATERAL subquery that the planner cannot flatten, ``OFFSET
    0``): as a plain ``= ANY`` the planner scanned a ledger it had no statistics
    for yet, which grew with every envelope replayed, 17-30 ms per lookup at
    12,000 rows (issue 18's sixth round).
    """

    def among(column: Any, name: str) -> Any:
        return group_sql.among(dialect, column, name)

    activities = select(_activities).where(among(_activities.c.id, "ids"))
    activities = activities.order_by(_activities.c.id)
    gateways = select(_gateways.c.id).where(among(_gateways.c.id, "ids")).order_by(_gateways.c.id)
    if dialect != "sqlite":
        activities = activities.with_for_update()  # in id order: concurrent workers never deadlock
    if dialect == "postgresql":
        # Locked in id order, as the heartbeats' groups lock them
        # (cloud_bridge/heartbeats.py): the UPDATE's own order is the plan's.
        gateways = gateways.with_for_update()
        wanted = (
            func.unnest(bindparam("keys", type_=ARRAY(Text)))
            .table_valued("id")
            .render_derived(name="k")
        )
        row = select(_ledger).where(_ledger.c.envelope_id == wanted.c.id).offset(0).lateral("l")
        ledger_rows = select(row).select_from(wanted).join(row, true())
    else:
        ledger_rows = select(_ledger).where(among(_ledger.c.envelope_id, "keys"))
    now = bindparam("now", type_=_gateways.c.last_seen.type)
    return _Statements(
        activities=activities,
        ledger_rows=ledger_rows,
        held=select(_ledger).where(among(_ledger.c.activity_id, "ids"), _ledger.c.outcome == HELD),
        types=select(_types).where(among(_types.c.name, "names")),
        delete_rows=delete(_rows).where(among(_rows.c.activity_id, "ids")),
        delete_records=delete(_records).where(among(_records.c.activity_id, "ids")),
        gateways=gateways,
        touch_gateways=update(_gateways)
        .where(among(_gateways.c.id, "ids"), _gateways.c.last_seen < now)
        .values(last_seen=now),
    )


def _holder_refusal(act: _Act, gateway_id: str) -> Refusal | None:
    if act.state == CANCELED:
        return rejections.CANCELED, f"Activity {act.id!r} was canceled by central."
    if act.state != OFFLINE or act.holder_gateway != gateway_id:
        return (
            rejections.PERMISSION,
            f"Activity {act.id!r} is not checked out to gateway {gateway_id!r}.",
        )
    return None


class BulkBatch:
    """A commit group's work inside one open transaction (``conn``), decided at ``now``."""

    def __init__(self, conn: Connection, parts: list[Part], now: datetime) -> None:
        self.conn = conn
        self.parts = parts
        self.now = now
        self.results: Results = []  # the part being decided
        self.inserts: dict[str, Entry] = {}  # new ledger rows, by envelope id
        self.updates: list[Entry] = []  # decided rows that were held in the database
        self.acts: dict[str, _Act] = {}
        self.forms: dict[str, tuple[FormDefinition, int]] = {}

    def run(self) -> list[Part]:
        """Load, decide, write; each part's ``results`` filled (send them after the commit)."""
        existing = self.load()
        for part in self.parts:
            part.results = []
        for part in self.parts:
            self.results = part.results
            self.decide(part, existing)
        self.write()
        return self.parts

    # --- load -------------------------------------------------------------------------

    def load(self) -> dict[str, Entry]:
        """Lock and read the group's activities; the ledger rows its envelope ids have."""
        conn = self.conn
        sql = _statements(conn.dialect.name)
        envelopes = [e for part in self.parts for e in part.envelopes]
        ids = sorted({e.activity_id for e in envelopes})
        for r in conn.execute(sql.activities, {"ids": ids}).mappings():
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
        keys = sorted({str(e.envelope_id) for e in envelopes})
        existing = {
            r["envelope_id"]: dict(r)
            for r in conn.execute(sql.ledger_rows, {"keys": keys}).mappings()
        }
        if self.acts:
            held = conn.execute(sql.held, {"ids": list(self.acts)}).mappings()
            for r in held:
                act = self.acts[r["activity_id"]]
                if r["checkout_no"] != act.checkout_no:
                    continue
                if r["payload"] is not None:
                    env = WireEnvelope.model_validate(r["payload"])
                    act.held[r["seq"]] = _Held(dict(r), env, stored=True)
                elif r["code"] is not None:
                    refusal = (r["code"], r["reason"] or "")
                    act.held[r["seq"]] = _Held(dict(r), None, stored=True, refusal=refusal)
            type_names = sorted({a.type for a in self.acts.values()})
            for t in conn.execute(sql.types, {"names": type_names}).mappings():
                self.forms[t["name"]] = (_form_of(t), t["form_version"])
        return existing

    # --- decide -----------------------------------------------------------------------

    def decide(self, part: Part, existing: Mapping[str, Entry]) -> None:
        for env in part.envelopes:
            key = str(env.envelope_id)
            known = existing.get(key) or self.inserts.get(key)
            if known is not None:
                if known["outcome"] != HELD:
                    self.results.append((part.gateway_id, _result(known)))
                continue
            entry = _entry(env, part.gateway_id, part.batch_id, part.arrived)
            self.inserts[key] = entry
            self._arrive(entry, env, part.refused.get(key))

    def _arrive(self, entry: Entry, env: WireEnvelope, refusal: Refusal | None) -> None:
        act = self.acts.get(env.activity_id)
        if act is None:
            self._reject(
                entry,
                rejections.UNKNOWN_ACTIVITY,
                f"No activity {env.activity_id!r} exists at central.",
            )
            return
        entry["checkout_no"] = act.checkout_no
        entry["activity_version"] = act.version
        holder = _holder_refusal(act, entry["gateway_id"])
        if holder is not None:
            self._reject(entry, *holder)
            return
        if refusal is not None and env.seq < 1:
            self._reject(entry, *refusal)  # no usable seq: it can take no turn
            return
        if env.seq <= act.last_seq:
            self._reject(
                entry,
                rejections.STALE_SEQ,
                f"Sequence number {env.seq} of activity {act.id!r} was already used; "
                f"the next one is {act.last_seq + 1}.",
            )
            return
        if env.seq > act.last_seq + 1:
            if refusal is None:
                entry["payload"] = env.model_dump(mode="json")
                act.held[env.seq] = _Held(entry, env, stored=False)
            else:
                # Held without its payload (it could not be stored): the refusal waits.
                entry["code"], entry["reason"] = refusal[0], clip(refusal[1])
                act.held[env.seq] = _Held(entry, None, stored=False, refusal=refusal)
            return
        self._turn(act, entry, env if refusal is None else None, refusal)
        self._release(act)

    def _turn(
        self, act: _Act, entry: Entry, env: WireEnvelope | None, refusal: Refusal | None
    ) -> None:
        """The envelope whose seq is next: decided, or rejected with its refusal."""
        if env is None:
            assert refusal is not None
            act.last_seq = entry["seq"]
            act.dirty = True
            entry["activity_version"] = act.version
            self._reject(entry, *refusal)
        else:
            self._decide(act, entry, env)

    def _reject(self, entry: Entry, code: str, reason: str) -> None:
        entry["outcome"] = REJECTED
        entry["code"] = code
        entry["reason"] = clip(reason)
        entry["applied_at"] = self.now
        self.results.append((entry["gateway_id"], _result(entry)))

    def _form_version(self, type_name: str, number: int) -> FormDefinition | None:
        """The form version an envelope names (it is checked against its own version)."""
        if self.forms[type_name][1] == number:
            return self.forms[type_name][0]
        key = (type_name, number)
        form = _old_forms.get(key)
        if form is None:
            raw = self.conn.execute(
                select(_versions.c.form).where(
                    _versions.c.type_name == type_name, _versions.c.form_version == number
                )
            ).scalar()
            if raw is None:
                return None
            if len(_old_forms) > 1000:
                _old_forms.clear()
            form = _old_forms[key] = FormDefinition.model_validate(raw)
        return form

    def _decide(self, act: _Act, entry: Entry, env: WireEnvelope) -> None:
        """Apply or reject the envelope whose seq is next; it consumes the seq either way."""
        act.last_seq = env.seq
        act.dirty = True
        entry["activity_version"] = act.version
        if env.author not in (act.holder_user, act.responsible):
            self._reject(
                entry,
                rejections.PERMISSION,
                f"User {env.author!r} may not submit for activity {act.id!r}; "
                f"it is held by {act.holder_user!r}.",
            )
            return
        if env.base_version != act.version:
            self._reject(
                entry,
                rejections.CONFLICT,
                f"The envelope was edited from version {env.base_version} of activity "
                f"{act.id!r}, but central has version {act.version}; "
                "it was not applied so nothing is overwritten.",
            )
            return
        form = self._form_version(act.type, env.form_version)
        if form is None:
            # Checked against its own version only: never another one.
            self._reject(
                entry,
                rejections.VALIDATION,
                f"The envelope was filled against form version {env.form_version} of "
                f"{act.type!r}, which central does not have (its newest is "
                f"{self.forms[act.type][1]}).",
            )
            return
        problems = validate_submission(
            form,
            env.record,
            env.tables,
            list(env.attachments),
            complete=env.status == "completed",
            today=env.created_at.date(),
        )
        if problems:
            note = ""
            if env.form_version != self.forms[act.type][1]:
                note = f" (filled against form version {env.form_version})"
            self._reject(entry, rejections.VALIDATION, "; ".join(problems) + note)
            return
        act.record = env
        if env.status == "completed":
            # Rule 5: checked in — back online, off the gateway, version bumped.
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
            held = act.held.pop(act.last_seq + 1)
            refusal = _holder_refusal(act, held.entry["gateway_id"])
            if refusal is not None:
                act.last_seq = held.entry["seq"]
                act.dirty = True
                self._reject(held.entry, *refusal)
            else:
                self._turn(act, held.entry, held.env, held.refusal)
            self._decided_held(held)
        if act.state != OFFLINE and act.held:
            code = rejections.CHECKED_IN if act.state == ONLINE else rejections.CANCELED
            for seq in sorted(act.held):
                held = act.held.pop(seq)
                held.entry["activity_version"] = act.version
                self._reject(
                    held.entry,
                    code,
                    f"Activity {act.id!r} was checked in (or canceled) before this "
                    "envelope's turn came.",
                )
                self._decided_held(held)

    def _decided_held(self, held: _Held) -> None:
        held.entry["payload"] = None
        if held.stored:
            self.updates.append(held.entry)

    # --- write ------------------------------------------------------------------------

    def write(self) -> None:
        conn = self.conn
        group_sql.insert_rows(conn, _ledger, list(self.inserts.values()))
        group_sql.update_rows(
            conn,
            _ledger,
            "envelope_id",
            [
                {"envelope_id": u["envelope_id"], **{k: u[k] for k in _UPDATED_LEDGER}}
                | {"payload": None}
                for u in self.updates
            ],
        )
        group_sql.update_rows(
            conn,
            _activities,
            "id",
            [
                {
                    "id": a.id,
                    "state": a.state,
                    "holder_gateway": a.holder_gateway,
                    "holder_user": a.holder_user,
                    "last_seq": a.last_seq,
                    "version": a.version,
                    "updated_at": self.now,
                }
                for a in self.acts.values()
                if a.dirty
            ],
        )
        self._write_records()
        self._touch_gateway()

    def _write_records(self) -> None:
        applied = [a for a in self.acts.values() if a.record is not None]
        if not applied:
            return
        conn = self.conn
        ids = [a.id for a in applied]
        sql = _statements(conn.dialect.name)
        conn.execute(sql.delete_rows, {"ids": ids})
        conn.execute(sql.delete_records, {"ids": ids})
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
        group_sql.insert_rows(conn, _records, records)
        group_sql.insert_rows(conn, _rows, rows)

    def _touch_gateway(self) -> None:
        """Last, after every activity lock, in id order: the fleet view's "last seen"."""
        conn = self.conn
        ids = sorted({part.gateway_id for part in self.parts})
        sql = _statements(conn.dialect.name)
        found = {r[0] for r in conn.execute(sql.gateways, {"ids": ids})}
        for gateway_id in ids:
            if gateway_id not in found:
                conn.execute(new_gateway_row(conn.dialect.name, gateway_id, self.now))
        if found:
            conn.execute(sql.touch_gateways, {"ids": sorted(found), "now": self.now})
