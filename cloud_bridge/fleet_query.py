"""One page of a fleet of thousands, and its counts, answered by the database.

The health :func:`cloud_bridge.fleet.assess` derives in Python is written
here once more as a SQL expression over the ``gateways`` columns
(:func:`health_rank`, :func:`reason_conditions`), with the thresholds and the
time *now* as bound parameters (no date functions: the same SQL runs on
SQLite and PostgreSQL). So a page filtered by health, searched and sorted is
one query, and the summary is one ``GROUP BY``, whatever the size of the
fleet; Python builds the views of the one page only. A test holds the two
forms to the same answer.

Paging is by keyset: the cursor carries the last row's sort key and id, the
sort, and the *now* of the first page, so every page of one walk judges
health at the same moment (a gateway's health moves with time alone).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.orm import Session

from cloud_bridge.errors import bad_request
from cloud_bridge.fleet import LEVELS, Thresholds, gateway_view, iso, parse_time
from cloud_bridge.models import Gateway

STATES = ("online", "offline", "unknown")
# A request without ``limit`` gets every gateway up to this many; beyond it, this many
# and a ``next_cursor`` (a small fleet keeps the unpaged answer it always had).
UNPAGED_MAX = 1000
MAX_LIMIT = 500
MAX_TEXT = 64
MAX_SECONDS = 10 * 365 * 86400
FRESH_S = 2 * 60  # as fleet.oldest_pending_now: a heard backlog age is current this long
PARAMS = (
    "limit",
    "cursor",
    "health",
    "state",
    "q",
    "version",
    "heard_within",
    "silent_for",
    "sort",
    "order",
)
# sort key -> its direction when ``order`` is not given
SORTS: dict[str, Literal["asc", "desc"]] = {
    "health": "desc",  # worst first
    "id": "asc",
    "last_heard": "asc",  # the longest silent first
    "backlog": "desc",
    "version": "asc",
    "state": "asc",
}
REASONS = (
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
)


@dataclass(frozen=True)
class FleetQuery:
    """What one request asks of the fleet (parsed and bounded by :func:`parse`)."""

    limit: int | None = None  # None: the unpaged form (up to UNPAGED_MAX)
    health: tuple[str, ...] = ()
    state: tuple[str, ...] = ()
    q: str | None = None
    version: str | None = None
    heard_within: float | None = None
    silent_for: float | None = None
    sort: str = "health"
    order: Literal["asc", "desc"] = "desc"
    after: tuple[Any, str] | None = None  # (sort key, id) of the last row of the page before
    at: datetime | None = None  # the now of the walk's first page

    @property
    def filtered(self) -> bool:
        return bool(
            self.health
            or self.state
            or self.q
            or self.version
            or self.heard_within is not None
            or self.silent_for is not None
        )

    @property
    def page_size(self) -> int:
        return self.limit if self.limit is not None else UNPAGED_MAX


# --- parsing (pure) ----------------------------------------------------------------------


def _text(name: str, raw: str) -> str:
    if len(raw) > MAX_TEXT or any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise bad_request(
            f"{name} must be at most {MAX_TEXT} printable characters.", f"invalid_{name}"
        )
    return raw


def _choices(name: str, values: list[str], allowed: tuple[str, ...]) -> tuple[str, ...]:
    got: list[str] = []
    for raw in values:
        for part in raw.split(","):
            part = part.strip()
            if part not in allowed:
                raise bad_request(
                    f"{name} must be one or more of {', '.join(allowed)} (comma-separated); "
                    f"got {part[:40]!r}.",
                    f"invalid_{name}",
                )
            if part not in got:
                got.append(part)
    return tuple(got)


def _seconds(name: str, raw: str) -> float:
    try:
        value = float(raw) if len(raw) <= 20 else math.nan
    except ValueError:
        value = math.nan
    if not 0 <= value <= MAX_SECONDS:  # also refuses nan
        raise bad_request(
            f"{name} must be a number of seconds from 0 to {MAX_SECONDS}.", f"invalid_{name}"
        )
    return value


def _one(query: Mapping[str, str], multi: Any, name: str) -> str | None:
    values = multi(name, []) if multi is not None else [query[name]] if name in query else []
    if len(values) > 1 and name not in ("health", "state"):
        raise bad_request(f"Give {name} once.", f"invalid_{name}")
    return values[0] if values else None


def parse(query: Mapping[str, str], *, known_only: bool = True) -> FleetQuery:
    """The request's query string as a :class:`FleetQuery`; anything wrong is a 400."""
    multi = getattr(query, "getall", None)
    if known_only:
        unknown = sorted(set(query) - set(PARAMS))
        if unknown:
            raise bad_request(
                f"Unknown query parameter {unknown[0][:40]!r}; this list takes "
                f"{', '.join(PARAMS)}.",
                "invalid_query",
            )
    limit: int | None = None
    raw = _one(query, multi, "limit")
    if raw is not None:
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 6 and 1 <= int(raw) <= MAX_LIMIT):
            raise bad_request(
                f"limit must be a whole number from 1 to {MAX_LIMIT}.", "invalid_limit"
            )
        limit = int(raw)

    def listed(name: str) -> list[str]:
        return (
            list(multi(name, [])) if multi is not None else [query[name]] if name in query else []
        )

    def text(name: str) -> str | None:
        raw = _one(query, multi, name)
        return _text(name, raw.strip()) if raw is not None and raw.strip() else None

    def seconds(name: str) -> float | None:
        raw = _one(query, multi, name)
        return _seconds(name, raw.strip()) if raw is not None and raw.strip() else None

    sort, order = "health", SORTS["health"]
    raw = _one(query, multi, "sort")
    if raw is not None:
        if raw not in SORTS:
            raise bad_request(f"sort must be one of {', '.join(SORTS)}.", "invalid_sort")
        sort, order = raw, SORTS[raw]
    raw = _one(query, multi, "order")
    if raw is not None:
        if raw not in ("asc", "desc"):
            raise bad_request("order must be asc or desc.", "invalid_order")
        order = "asc" if raw == "asc" else "desc"
    out = FleetQuery(
        limit=limit,
        health=_choices("health", listed("health"), LEVELS),
        state=_choices("state", listed("state"), STATES),
        q=text("q"),
        version=text("version"),
        heard_within=seconds("heard_within"),
        silent_for=seconds("silent_for"),
        sort=sort,
        order=order,
    )
    raw = _one(query, multi, "cursor")
    if raw is not None:
        out = _with_cursor(out, raw)
    return out


def encode_cursor(fq: FleetQuery, key: Any, gid: str, at: datetime) -> str:
    k = iso(key) if isinstance(key, datetime) else key
    doc = {"s": fq.sort, "o": fq.order, "k": k, "id": gid, "at": iso(at)}
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _with_cursor(fq: FleetQuery, raw: str) -> FleetQuery:
    wrong = bad_request(
        "cursor is not one this API gave (take next_cursor from the previous page, "
        "with the same sort and order).",
        "invalid_cursor",
    )
    if len(raw) > 400 or not raw.isascii():
        raise wrong
    try:
        doc = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise wrong from None
    if not isinstance(doc, dict) or doc.get("s") != fq.sort or doc.get("o") != fq.order:
        raise wrong
    gid, key, at = doc.get("id"), doc.get("k"), parse_time(doc.get("at"))
    if not isinstance(gid, str) or len(gid) > MAX_TEXT or at is None:
        raise wrong
    if fq.sort == "last_heard":
        key = parse_time(key)
        if key is None:
            raise wrong
    elif fq.sort in ("health", "backlog"):
        if not isinstance(key, int) or isinstance(key, bool) or abs(key) > 2**62:
            raise wrong
    elif not isinstance(key, str) or len(key) > MAX_TEXT:
        raise wrong
    return replace(fq, after=(key, gid), at=at)


# --- health as SQL -------------------------------------------------------------------------


def _ago(now: datetime, seconds: float) -> datetime:
    return now - timedelta(seconds=seconds)


def _pending_at_least(now: datetime, seconds: float) -> ColumnElement[bool]:
    """The oldest pending envelope is at least ``seconds`` old now (fleet.oldest_pending_now)."""
    g = Gateway
    fresh = and_(g.state == "online", g.heartbeat_at > _ago(now, FRESH_S))
    return and_(
        g.heartbeat_at.is_not(None),
        g.oldest_pending_s.is_not(None),
        or_(
            and_(fresh, g.oldest_pending_s >= seconds),
            and_(~fresh, g.pending_since <= _ago(now, seconds)),
        ),
    )


def reason_conditions(t: Thresholds, now: datetime) -> dict[str, dict[str, ColumnElement[bool]]]:
    """reason code -> level -> when it holds (as :func:`cloud_bridge.fleet.assess`)."""
    g = Gateway
    never = g.heartbeat_at.is_(None)

    def cert_left_le(s: float) -> ColumnElement[bool]:
        return g.cert_expires_at <= now + timedelta(seconds=s)

    cert_future = g.cert_expires_at > now
    return {
        "offline": {"critical": g.state == "offline"},
        "never_heard": {
            "critical": and_(never, g.first_seen <= _ago(now, t.silent_critical_s)),
            "warn": never,
        },
        "silent": {
            "critical": g.heartbeat_at <= _ago(now, t.silent_critical_s),
            "warn": g.heartbeat_at <= _ago(now, t.silent_warn_s),
        },
        "backlog_old": {
            "critical": _pending_at_least(now, t.backlog_critical_s),
            "warn": _pending_at_least(now, t.backlog_warn_s),
        },
        "disk_low": {
            "critical": g.disk_free_bytes <= t.disk_critical_bytes,
            "warn": g.disk_free_bytes <= t.disk_warn_bytes,
        },
        "replica_lagging": {
            "critical": g.replica_lag_s >= t.replica_lag_critical_s,
            "warn": g.replica_lag_s >= t.replica_lag_warn_s,
        },
        "replica_error": {"warn": g.replica_failing.is_(True)},
        "cert_expired": {"critical": g.cert_expires_at <= now},
        "cert_expiring": {
            "critical": and_(
                cert_future, cert_left_le(t.cert_warn_s), cert_left_le(t.cert_critical_s)
            ),
            "warn": and_(cert_future, cert_left_le(t.cert_warn_s)),
        },
        "dropped_message": {
            "warn": and_(
                g.last_error.is_not(None),
                g.last_error != "",
                g.last_error_at >= _ago(now, t.error_warn_s),
            )
        },
    }


def health_rank(t: Thresholds, now: datetime) -> ColumnElement[int]:
    """0 ok, 1 warn, 2 critical: the worst level of any reason (``LEVELS.index``)."""
    conds = reason_conditions(t, now)
    critical = [c["critical"] for c in conds.values() if "critical" in c]
    warn = [c["warn"] for c in conds.values() if "warn" in c]
    return case((or_(*critical), 2), (or_(*warn), 1), else_=0)


def _sort_key(fq: FleetQuery, rank: ColumnElement[int]) -> ColumnElement[Any]:
    g = Gateway
    keys: dict[str, Any] = {
        "health": rank,
        "id": g.id,
        "last_heard": func.coalesce(g.heartbeat_at, g.first_seen),
        "backlog": func.coalesce(g.backlog, -1),
        "version": func.coalesce(g.version, ""),
        "state": g.state,
    }
    key: ColumnElement[Any] = keys[fq.sort]
    return key


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _where(fq: FleetQuery, rank: ColumnElement[int], now: datetime) -> list[ColumnElement[bool]]:
    g = Gateway
    where: list[ColumnElement[bool]] = []
    if fq.health:
        where.append(rank.in_([LEVELS.index(h) for h in fq.health]))
    if fq.state:
        where.append(g.state.in_(fq.state))
    if fq.q:
        where.append(g.id.ilike(_like(fq.q), escape="\\"))
    if fq.version:
        where.append(g.version == fq.version)
    if fq.heard_within is not None:
        where.append(g.heartbeat_at >= _ago(now, fq.heard_within))
    if fq.silent_for is not None:
        where.append(func.coalesce(g.heartbeat_at, g.first_seen) <= _ago(now, fq.silent_for))
    return where


# --- the answers (blocking: DB threads) ------------------------------------------------------


@dataclass
class Page:
    views: list[dict[str, Any]]
    total: int
    next_cursor: str | None
    as_of: datetime


def page(session: Session, fq: FleetQuery, t: Thresholds, now: datetime) -> Page:
    """One page of the gateways ``fq`` asks for, its views, and how many match in all."""
    at = fq.at or now
    rank = health_rank(t, at)
    key = _sort_key(fq, rank)
    where = _where(fq, rank, at)
    total = int(session.scalar(select(func.count()).select_from(Gateway).where(*where)) or 0)
    stmt = select(Gateway, key.label("k")).where(*where)
    if fq.after is not None:
        k, gid = fq.after
        beyond = key < k if fq.order == "desc" else key > k
        stmt = stmt.where(or_(beyond, and_(key == k, Gateway.id > gid)))
    ordered = key.desc() if fq.order == "desc" else key.asc()
    rows = session.execute(stmt.order_by(ordered, Gateway.id.asc()).limit(fq.page_size + 1)).all()
    more = len(rows) > fq.page_size
    rows = rows[: fq.page_size]
    views = [gateway_view(g, at, t) for g, _k in rows]
    cursor = encode_cursor(fq, rows[-1][1], rows[-1][0].id, at) if more and rows else None
    return Page(views, total, cursor, at)


def summary(
    session: Session, fq: FleetQuery, t: Thresholds, now: datetime, *, reasons: bool = True
) -> dict[str, Any]:
    """Counts by health, by state and by reason, of the gateways ``fq`` filters (no listing)."""
    rank = health_rank(t, now)
    where = _where(fq, rank, now)
    by = session.execute(
        select(rank.label("rank"), Gateway.state, func.count())
        .where(*where)
        .group_by(rank, Gateway.state)
    ).all()
    by_health = dict.fromkeys(LEVELS, 0)
    by_state = dict.fromkeys(STATES, 0)
    for r, state, n in by:
        by_health[LEVELS[int(r)]] += int(n)
        by_state[state if state in by_state else "unknown"] += int(n)
    out: dict[str, Any] = {
        "total": sum(by_health.values()),
        "by_health": by_health,
        "by_state": by_state,
        "as_of": iso(now),
    }
    if not reasons:
        return out
    conds = reason_conditions(t, now)
    columns = [
        func.coalesce(func.sum(case((or_(*levels.values()), 1), else_=0)), 0).label(code)
        for code, levels in conds.items()
    ]
    counts = session.execute(select(*columns).select_from(Gateway).where(*where)).one()
    out["by_reason"] = {code: int(n) for code, n in zip(conds, counts, strict=True)}
    return out


def metric_rows(session: Session, t: Thresholds, now: datetime) -> list[dict[str, Any]]:
    """Every gateway's figures for ``/metrics``, from the columns (no view is built).

    The keys are those of :func:`cloud_bridge.fleet.gateway_view` that the
    gauges read; at 10,000 gateways building every view took seconds per scrape.
    """
    g = Gateway
    rows = session.execute(
        select(
            g.id,
            health_rank(t, now),
            g.state,
            func.coalesce(g.heartbeat_at, g.first_seen),
            g.heartbeat_at,
            g.backlog,
            g.oldest_pending_s,
            g.pending_since,
            g.disk_free_bytes,
            g.replica_lag_s,
            g.cert_expires_at,
        ).order_by(g.id)
    ).all()
    out = []
    for gid, rank, state, since, heard, backlog, oldest, pending_since, disk, lag, cert in rows:
        pending: float | None = None
        if heard is not None and oldest is not None:
            fresh = state == "online" and (now - heard).total_seconds() < FRESH_S
            pending = (
                oldest if fresh or pending_since is None else (now - pending_since).total_seconds()
            )
        out.append(
            {
                "id": gid,
                "health": LEVELS[int(rank)],
                "online": state == "online",
                "silent_s": max(0.0, (now - since).total_seconds()),
                "backlog": backlog,
                "oldest_pending_now_s": pending,
                "disk_free_bytes": disk,
                "replica_lag_s": lag,
                "cert_expires_at": cert,
            }
        )
    return out


# --- the OpenAPI description of the parameters and the summary -------------------------------

_TEXT = {"type": "string", "maxLength": MAX_TEXT}
_SECONDS = {"type": "number", "minimum": 0, "maximum": MAX_SECONDS}
QUERY_PARAMETERS: dict[str, tuple[dict[str, Any], str]] = {
    "limit": (
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
        f"page size; without it every gateway up to {UNPAGED_MAX}, then a page of that size",
    ),
    "cursor": ({"type": "string", "maxLength": 400}, "next_cursor of the page before"),
    "health": (
        {"type": "string", "pattern": "^(ok|warn|critical)(,(ok|warn|critical))*$"},
        "only these levels (comma-separated)",
    ),
    "state": (
        {"type": "string", "pattern": "^(online|offline|unknown)(,(online|offline|unknown))*$"},
        "only these states (comma-separated)",
    ),
    "q": (_TEXT, "gateways whose id contains this (case-insensitive)"),
    "version": (_TEXT, "gateways running exactly this version"),
    "heard_within": (_SECONDS, "a heartbeat heard within this many seconds"),
    "silent_for": (_SECONDS, "no heartbeat for at least this many seconds (or never)"),
    "sort": ({"enum": list(SORTS)}, "health (worst first) unless given"),
    "order": ({"enum": ["asc", "desc"]}, "each sort has its natural order unless given"),
}
SUMMARY_PARAMETERS = ("health", "state", "q", "version", "heard_within", "silent_for")


def openapi_parameters(names: tuple[str, ...] = PARAMS) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": QUERY_PARAMETERS[name][0],
            "description": QUERY_PARAMETERS[name][1],
        }
        for name in names
    ]


def _counts(keys: tuple[str, ...]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": list(keys),
        "properties": {k: {"type": "integer", "minimum": 0} for k in keys},
    }


SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["total", "by_health", "by_state", "by_reason", "as_of", "broker_connected"],
    "properties": {
        "total": {"type": "integer", "minimum": 0},
        "by_health": _counts(LEVELS),
        "by_state": _counts(STATES),
        "by_reason": _counts(REASONS),
        "as_of": {"type": "string", "format": "date-time"},
        "broker_connected": {"type": "boolean"},
    },
}
