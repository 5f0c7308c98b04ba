"""The fleet view: what central knows about each gateway, and how healthy it is.

Three parts, from pure to blocking:

- :func:`assess` — the derived health (``ok``, ``warn``, ``critical``) with
  its reasons, from a gateway's last heard figures, the time now and the
  ``[fleet]`` thresholds. Pure: no clock, no IO (unit-tested directly).
- :func:`gateway_view` — a gateway row as the admin API, the fleet page and
  ``/metrics`` show it: every figure with the time it was last heard and its
  age, the health and reasons.
- bookkeeping run in the DB threads: :func:`note_heartbeat` and
  :func:`note_state` (called by the uplink handler) keep the latest figures on
  the ``gateways`` row and append to ``gateway_history``; :func:`prune_history`
  forgets what is older than ``fleet.history_days`` (the bridge runs it
  periodically via :func:`async_prune_loop`).

The view is truthful while a site is dark: silence itself is a reason (a
gateway that stopped talking is never ``ok``), every figure carries when it
was heard, and figures that can only grow while a site is dark (the age of
its oldest unsent envelope) are judged at their lower bound now, not at the
value heard hours ago.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from cloud_bridge.config import FleetSection
from cloud_bridge.models import Gateway, GatewayHistory, utcnow
from outpost.times import iso as iso
from outpost.wire.schemas import GatewayState, Heartbeat

logger = logging.getLogger(__name__)

Level = Literal["ok", "warn", "critical"]
LEVELS: tuple[Level, ...] = ("ok", "warn", "critical")
PENDING_STATES = ("queued", "sent")
MB = 1024 * 1024
# A heartbeat goes into gateway_history at most this often per gateway.
HISTORY_EVERY_S = 300.0
# Keep every history heartbeat this long; older ones are rolled up to one an hour.
HISTORY_FULL_S = 24 * 3600.0
# An oldest-pending age beyond this is taken as this (no datetime overflow at 1e12 s).
MAX_PENDING_S = 50 * 365 * 86400.0

# The figures a heartbeat carries, in the order the page shows them.
HEARTBEAT_FIGURES = (
    "version",
    "uptime_s",
    "counts",
    "backlog",
    "oldest_pending_s",
    "rejected",
    "disk_free_bytes",
    "db_bytes",
    "replica_lag_s",
    "replica_error",
    "devices",
    "last_sync",
    "cert_expires_at",
    "attachments_to_upload",
    "attachments_to_upload_bytes",
)


@dataclass(frozen=True)
class Thresholds:
    silent_warn_s: float = 180
    silent_critical_s: float = 900
    backlog_warn_s: float = 3600
    backlog_critical_s: float = 6 * 3600
    disk_warn_bytes: int = 1024 * MB
    disk_critical_bytes: int = 256 * MB
    replica_lag_warn_s: float = 60
    replica_lag_critical_s: float = 900
    cert_warn_s: float = 30 * 86400
    cert_critical_s: float = 7 * 86400
    error_warn_s: float = 3600

    @classmethod
    def from_config(cls, f: FleetSection) -> Thresholds:
        return cls(
            silent_warn_s=f.silent_warn_s,
            silent_critical_s=f.silent_critical_s,
            backlog_warn_s=f.backlog_warn_s,
            backlog_critical_s=f.backlog_critical_s,
            disk_warn_bytes=f.disk_warn_mb * MB,
            disk_critical_bytes=f.disk_critical_mb * MB,
            replica_lag_warn_s=f.replica_lag_warn_s,
            replica_lag_critical_s=f.replica_lag_critical_s,
            cert_warn_s=f.cert_warn_days * 86400.0,
            cert_critical_s=f.cert_critical_days * 86400.0,
            error_warn_s=f.error_warn_s,
        )


@dataclass(frozen=True)
class Reason:
    code: str  # stable: silent, never_heard, offline, backlog_old, disk_low, replica_lagging,
    # replica_error, cert_expiring, cert_expired, dropped_message
    level: Level
    message: str  # one sentence for a person

    def as_json(self) -> dict[str, str]:
        return {"code": self.code, "level": self.level, "message": self.message}


@dataclass(frozen=True)
class Health:
    level: Level
    reasons: tuple[Reason, ...] = ()


@dataclass(frozen=True)
class Facts:
    """What central last heard from one gateway (central's clock for every ``*_at``)."""

    first_seen: datetime
    state: str = "unknown"  # online | offline | unknown
    state_at: datetime | None = None
    heartbeat_at: datetime | None = None
    heartbeat: dict[str, Any] = field(default_factory=dict)  # the last Heartbeat, JSON mode
    last_error: str | None = None
    last_error_at: datetime | None = None

    @classmethod
    def of(cls, g: Gateway) -> Facts:
        return cls(
            first_seen=g.first_seen,
            state=g.state,
            state_at=g.state_at,
            heartbeat_at=g.heartbeat_at,
            heartbeat=dict(g.last_heartbeat or {}),
            last_error=g.last_error,
            last_error_at=g.last_error_at,
        )


# --- health (pure) ---------------------------------------------------------------------


def duration(seconds: float) -> str:
    """``42 s``, ``7 min``, ``3 h 5 min``, ``2 d 4 h`` — for reasons and the page."""
    s = max(0, int(seconds))
    if s < 90:
        return f"{s} s"
    if s < 3600:
        return f"{round(s / 60)} min"
    if s < 86400:
        h, m = divmod(round(s / 60), 60)
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(round(s / 3600), 24)
    return f"{d} d {h} h" if h else f"{d} d"


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _graded(value: float, warn: float, critical: float) -> Level:
    """``value`` against thresholds where more is worse."""
    if value >= critical:
        return "critical"
    if value >= warn:
        return "warn"
    return "ok"


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def silent_s(facts: Facts, now: datetime) -> float:
    """Seconds since the last heartbeat (since first seen, when none was ever heard)."""
    since = facts.heartbeat_at or facts.first_seen
    return max(0.0, (now - since).total_seconds())


def backlog(heartbeat: dict[str, Any]) -> int | None:
    if not heartbeat:
        return None
    counts = heartbeat.get("counts") or {}
    return sum(int(counts.get(s, 0)) for s in PENDING_STATES)


def oldest_pending_now(facts: Facts, now: datetime) -> tuple[float | None, bool]:
    """The oldest pending envelope's age now, and whether that is a lower bound.

    While the gateway is online and talking, the heard value is current. Once
    it is offline or silent, nothing it holds can have been sent since, so the
    age has grown by at least the silence.
    """
    heard = facts.heartbeat.get("oldest_pending_s")
    if heard is None or facts.heartbeat_at is None:
        return None, False
    age = (now - facts.heartbeat_at).total_seconds()
    if facts.state == "online" and age < 2 * 60:
        return float(heard), False
    return float(heard) + max(0.0, age), True


def assess(facts: Facts, now: datetime, t: Thresholds) -> Health:
    """The gateway's health and every reason for it (worst first)."""
    reasons: list[Reason] = []
    hb = facts.heartbeat
    quiet = silent_s(facts, now)

    if facts.state == "offline":
        since = f" for {duration((now - facts.state_at).total_seconds())}" if facts.state_at else ""
        reasons.append(
            Reason(
                "offline",
                "critical",
                f"Offline{since}: the broker announced its last will, or it shut down.",
            )
        )
    if facts.heartbeat_at is None:
        level = _graded(quiet, t.silent_warn_s, t.silent_critical_s)
        reasons.append(
            Reason(
                "never_heard",
                "critical" if level == "critical" else "warn",
                f"No heartbeat heard since it was first seen {duration(quiet)} ago.",
            )
        )
    else:
        level = _graded(quiet, t.silent_warn_s, t.silent_critical_s)
        if level != "ok":
            reasons.append(
                Reason("silent", level, f"Silent for {duration(quiet)}: no heartbeat since then.")
            )

    pending, lower_bound = oldest_pending_now(facts, now)
    if pending is not None:
        level = _graded(pending, t.backlog_warn_s, t.backlog_critical_s)
        if level != "ok":
            at_least = "at least " if lower_bound else ""
            count = backlog(hb)
            what = f"{count} envelopes" if count is not None else "Envelopes"
            reasons.append(
                Reason(
                    "backlog_old",
                    level,
                    f"{what} waiting; the oldest is {at_least}{duration(pending)} old.",
                )
            )

    free = hb.get("disk_free_bytes")
    if free is not None:
        level = "ok"
        if free <= t.disk_critical_bytes:
            level = "critical"
        elif free <= t.disk_warn_bytes:
            level = "warn"
        if level != "ok":
            reasons.append(Reason("disk_low", level, f"Only {size(free)} free on its disk."))

    lag = hb.get("replica_lag_s")
    if lag is not None:
        level = _graded(float(lag), t.replica_lag_warn_s, t.replica_lag_critical_s)
        if level != "ok":
            reasons.append(
                Reason("replica_lagging", level, f"Its replica is {duration(lag)} behind.")
            )
    if hb.get("replica_error"):
        reasons.append(
            Reason(
                "replica_error", "warn", f"Replication reports: {str(hb['replica_error'])[:200]}"
            )
        )

    expires = parse_time(hb.get("cert_expires_at"))
    if expires is not None:
        left = (expires - now).total_seconds()
        if left <= 0:
            reasons.append(
                Reason(
                    "cert_expired",
                    "critical",
                    f"Its certificate expired {duration(-left)} ago: the broker will refuse it.",
                )
            )
        elif left <= t.cert_warn_s:
            reasons.append(
                Reason(
                    "cert_expiring",
                    "critical" if left <= t.cert_critical_s else "warn",
                    f"Its certificate expires in {duration(left)} ({expires:%Y-%m-%d}).",
                )
            )

    if facts.last_error and facts.last_error_at is not None:
        ago = (now - facts.last_error_at).total_seconds()
        if ago <= t.error_warn_s:
            reasons.append(
                Reason(
                    "dropped_message",
                    "warn",
                    f"Central dropped or rejected one of its messages {duration(ago)} ago: "
                    f"{facts.last_error[:200]}",
                )
            )

    reasons.sort(key=lambda r: -LEVELS.index(r.level))
    worst: Level = reasons[0].level if reasons else "ok"
    return Health(worst, tuple(reasons))


# --- the view -----------------------------------------------------------------------------


def _figure(value: Any, heard_at: datetime | None, now: datetime) -> dict[str, Any]:
    return {
        "value": value,
        "heard_at": iso(heard_at),
        "age_s": None if heard_at is None else round((now - heard_at).total_seconds(), 1),
    }


def figures(facts: Facts, now: datetime) -> dict[str, dict[str, Any]]:
    """Every figure with when central last heard it and how long ago that was."""
    hb = facts.heartbeat
    at = facts.heartbeat_at if hb else None
    out = {
        name: _figure(backlog(hb) if name == "backlog" else hb.get(name), at, now)
        for name in HEARTBEAT_FIGURES
    }
    out["state"] = _figure(facts.state, facts.state_at, now)
    out["last_error"] = _figure(facts.last_error, facts.last_error_at, now)
    return out


def gateway_view(g: Gateway, now: datetime, t: Thresholds) -> dict[str, Any]:
    """One gateway for the admin API (and the page and /metrics, which read the same)."""
    facts = Facts.of(g)
    hb = facts.heartbeat
    health = assess(facts, now, t)
    pending, lower_bound = oldest_pending_now(facts, now)
    return {
        "id": g.id,
        "health": health.level,
        "reasons": [r.as_json() for r in health.reasons],
        "state": g.state,
        "online": g.state == "online",
        "state_at": iso(g.state_at),
        "first_seen": iso(g.first_seen),
        "last_seen": iso(g.last_seen),
        "silent_s": round(silent_s(facts, now), 1),
        "version": g.version,
        "heartbeat_at": iso(g.heartbeat_at),
        "backlog": backlog(hb),
        "counts": hb.get("counts") or {},
        "oldest_pending_s": hb.get("oldest_pending_s"),
        "oldest_pending_now_s": None if pending is None else round(pending, 1),
        "oldest_pending_is_lower_bound": lower_bound,
        "rejected": hb.get("rejected"),
        "disk_free_bytes": hb.get("disk_free_bytes"),
        "db_bytes": hb.get("db_bytes"),
        "replica_lag_s": hb.get("replica_lag_s"),
        "replica_error": hb.get("replica_error"),
        "devices": hb.get("devices"),
        "uptime_s": hb.get("uptime_s"),
        "last_sync": hb.get("last_sync"),
        "cert_expires_at": hb.get("cert_expires_at"),
        "attachments_to_upload": hb.get("attachments_to_upload"),
        "attachments_to_upload_bytes": hb.get("attachments_to_upload_bytes"),
        "last_error": g.last_error,
        "last_error_at": iso(g.last_error_at),
        "figures": figures(facts, now),
    }


def history_json(h: GatewayHistory) -> dict[str, Any]:
    return {"kind": h.kind, "at": iso(h.at), "data": h.data}


# --- bookkeeping (blocking: DB threads) -------------------------------------------------


def note_heartbeat(
    session: Session,
    gw: Gateway,
    hb: Heartbeat,
    now: datetime,
    history_every_s: float = HISTORY_EVERY_S,
) -> None:
    """Keep ``hb`` as the gateway's latest figures; into its history once per ``history_every_s``.

    Every heartbeat (each 30 s from each gateway) updates the row; only one
    in ``history_every_s`` is kept in ``gateway_history`` (a history row per
    heartbeat was 2.9 million a day at 1,000 gateways), and
    :func:`rollup_history` later keeps one an hour.
    """
    data = hb.model_dump(mode="json")
    gw.last_heartbeat = data
    gw.heartbeat_at = now
    gw.version = hb.version
    set_figures(gw, data, now)
    last = gw.history_at
    if last is None or (now - last).total_seconds() >= history_every_s or last > now:
        gw.history_at = now
        session.add(GatewayHistory(gateway_id=gw.id, kind="heartbeat", at=now, data=data))


def set_figures(gw: Gateway, hb: dict[str, Any], heard: datetime) -> None:
    """The heartbeat's health figures as the row's columns (what fleet_query filters on)."""
    oldest = hb.get("oldest_pending_s")
    oldest = None if oldest is None else min(float(oldest), MAX_PENDING_S)
    gw.backlog = backlog(hb)
    gw.oldest_pending_s = oldest
    gw.pending_since = None if oldest is None else heard - timedelta(seconds=oldest)
    gw.disk_free_bytes = hb.get("disk_free_bytes")
    gw.replica_lag_s = hb.get("replica_lag_s")
    gw.replica_failing = bool(hb.get("replica_error"))
    gw.cert_expires_at = parse_time(hb.get("cert_expires_at"))


def note_state(session: Session, gw: Gateway, state: GatewayState, now: datetime) -> bool:
    """Record ``online``/``offline``; True when the state changed.

    ``state_at`` is central's clock at the change: a last will carries the
    time its gateway connected, not when it died, and a retained message
    delivered again after a bridge restart is no new change.
    """
    changed = gw.state != state.state
    if changed:
        gw.state = state.state
        gw.state_at = now
        session.add(
            GatewayHistory(
                gateway_id=gw.id,
                kind=state.state,
                at=now,
                data={"at": iso(state.at), "version": state.version},
            )
        )
    if state.version:
        gw.version = state.version
    return changed


def prune_history(session: Session, before: datetime) -> int:
    result = session.execute(delete(GatewayHistory).where(GatewayHistory.at < before))
    return int(getattr(result, "rowcount", 0) or 0)


def rollup_history(session: Session, start: datetime, end: datetime) -> int:
    """Keep the first heartbeat of each gateway in ``[start, end)``; state changes all stay.

    Run per hour by :func:`async_prune_loop` on history older than
    ``HISTORY_FULL_S``, so a gateway's history holds ``HISTORY_FULL_S`` at
    ``HISTORY_EVERY_S`` and one heartbeat an hour for the rest of
    ``history_days``. Portable SQL (no date functions): the bucket is the range.
    """
    in_range = (
        GatewayHistory.kind == "heartbeat",
        GatewayHistory.at >= start,
        GatewayHistory.at < end,
    )
    keep = select(func.min(GatewayHistory.id)).where(*in_range).group_by(GatewayHistory.gateway_id)
    result = session.execute(
        delete(GatewayHistory).where(*in_range, GatewayHistory.id.not_in(keep))
    )
    return int(getattr(result, "rowcount", 0) or 0)


def recent_history(session: Session, gateway_id: str, limit: int = 200) -> list[GatewayHistory]:
    return list(
        session.scalars(
            select(GatewayHistory)
            .where(GatewayHistory.gateway_id == gateway_id)
            .order_by(GatewayHistory.at.desc(), GatewayHistory.id.desc())
            .limit(limit)
        )
    )


def all_views(session: Session, t: Thresholds, now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or utcnow()
    return [gateway_view(g, now, t) for g in session.scalars(select(Gateway).order_by(Gateway.id))]


def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


class HistoryPrune:
    """A scheduled job: forget history older than ``history_days``, roll up what is
    older than ``full_s`` to one heartbeat per gateway per hour.

    Each hour bucket is its own short transaction, so the uplink never waits
    behind a long delete. Remembers how far it rolled up, so a run only
    thins the hours that aged since the last one.
    """

    def __init__(
        self,
        tx: Callable[[Callable[[Session], int]], Any],
        history_days: int,
        full_s: float = HISTORY_FULL_S,
    ) -> None:
        self._tx = tx
        self._history_days = history_days
        self._full_s = full_s
        self._rolled_to: datetime | None = None  # buckets before this are rolled up already

    async def async_run(self) -> None:
        now = utcnow()
        cutoff = now - timedelta(days=self._history_days)
        try:
            gone = await self._tx(functools.partial(prune_history, before=cutoff))
            horizon = _hour(now - timedelta(seconds=self._full_s))
            start = max(_hour(cutoff), self._rolled_to or _hour(cutoff))
            thinned = 0
            while start < horizon:
                end = start + timedelta(hours=1)
                thinned += await self._tx(functools.partial(rollup_history, start=start, end=end))
                start = end
            self._rolled_to = max(horizon, self._rolled_to or horizon)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("could not prune the gateways' history")
            return
        if gone or thinned:
            logger.info(
                "fleet history: %d entries older than %s removed, %d rolled up to hourly",
                gone,
                iso(cutoff),
                thinned,
            )


# --- the OpenAPI schema of a gateway view ---------------------------------------------------

_NUM = {"type": ["number", "null"]}
_INT = {"type": ["integer", "null"]}
_STR = {"type": ["string", "null"]}
_TIME = {"type": ["string", "null"], "format": "date-time"}
FIGURE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["value", "heard_at", "age_s"],
    "properties": {
        "value": {"description": "as last heard (any JSON type)"},
        "heard_at": {**_TIME, "description": "central's clock when it was last heard"},
        "age_s": {**_NUM, "description": "seconds since then"},
    },
}
GATEWAY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "health", "reasons", "state", "online", "last_seen", "figures"],
    "properties": {
        "id": {"type": "string"},
        "health": {"enum": list(LEVELS)},
        "reasons": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["code", "level", "message"],
                "properties": {
                    "code": {
                        "enum": [
                            "offline",
                            "never_heard",
                            "silent",
                            "backlog_old",
                            "disk_low",
                            "replica_lagging",
                            "replica_error",
                            "cert_expiring",
                            "cert_expired",
                            "dropped_message",
                        ]
                    },
                    "level": {"enum": ["warn", "critical"]},
                    "message": {"type": "string"},
                },
            },
        },
        "state": {"enum": ["online", "offline", "unknown"]},
        "online": {"type": "boolean"},
        "state_at": _TIME,
        "first_seen": _TIME,
        "last_seen": {**_TIME, "description": "any message from it"},
        "heartbeat_at": _TIME,
        "silent_s": {"type": "number", "description": "seconds since its last heartbeat"},
        "version": _STR,
        "backlog": {**_INT, "description": "queued + sent, as last heard"},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "oldest_pending_s": {**_NUM, "description": "as last heard"},
        "oldest_pending_now_s": {**_NUM, "description": "now (a lower bound while silent)"},
        "oldest_pending_is_lower_bound": {"type": "boolean"},
        "rejected": _INT,
        "disk_free_bytes": _INT,
        "db_bytes": _INT,
        "replica_lag_s": _NUM,
        "replica_error": _STR,
        "devices": _INT,
        "uptime_s": _NUM,
        "last_sync": _TIME,
        "cert_expires_at": _TIME,
        "attachments_to_upload": {**_INT, "description": "files not yet at central"},
        "attachments_to_upload_bytes": _INT,
        "last_error": _STR,
        "last_error_at": _TIME,
        "figures": {
            "type": "object",
            "description": "every figure with when central last heard it",
            "additionalProperties": {"$ref": "#/components/schemas/Figure"},
        },
    },
}
