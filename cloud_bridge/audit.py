"""The audit log: every change made on the platform or the API, who, when, what, from where.

Write an entry in the same transaction as the change it records, so a
change is never without its entry and an entry never without its change::

    audit.record(session, actor, "activity.approve", "activity", aid,
                 f"approved activity {aid!r}", version=3)

``action`` is a dotted machine name (``user.create``, ``activity.dispatch``);
``summary`` one sentence a person reads in the audit page. Secrets (passwords,
tokens) never go into an entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from cloud_bridge.models import AuditEntry, utcnow
from cloud_bridge.permissions import Actor

MAX_PAGE = 500


def record(
    session: Session,
    actor: Actor,
    action: str,
    target_type: str | None,
    target_id: str | None,
    summary: str,
    *,
    on_behalf_of: str | None = None,
    **details: Any,
) -> AuditEntry:
    entry = AuditEntry(
        at=utcnow(),
        actor=actor.username if actor.kind == "user" else None,
        actor_kind=actor.kind if actor.kind != "anonymous" else "system",
        on_behalf_of=on_behalf_of,
        action=action,
        target_type=target_type,
        target_id=target_id,
        summary=summary[:2000],
        details=details or None,
        client=actor.client[:200] or None,
        via=actor.via,
    )
    session.add(entry)
    session.flush()
    return entry


@dataclass(frozen=True)
class Filter:
    """What the audit page and ``GET /api/v1/audit`` filter on (all optional)."""

    actor: str | None = None  # a username, or "admin_token"
    action: str | None = None  # exact, or a prefix ending in "." ("activity.")
    target_type: str | None = None
    target_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None  # words in the summary
    before_id: int | None = None  # paging: entries older than this id
    limit: int = 100


def _query(f: Filter) -> Select[Any]:
    stmt = select(AuditEntry)
    if f.actor == "admin_token":
        stmt = stmt.where(AuditEntry.actor_kind == "admin_token")
    elif f.actor:
        stmt = stmt.where(or_(AuditEntry.actor == f.actor, AuditEntry.on_behalf_of == f.actor))
    if f.action:
        if f.action.endswith("."):
            stmt = stmt.where(AuditEntry.action.startswith(f.action, autoescape=True))
        else:
            stmt = stmt.where(AuditEntry.action == f.action)
    if f.target_type:
        stmt = stmt.where(AuditEntry.target_type == f.target_type)
    if f.target_id:
        stmt = stmt.where(AuditEntry.target_id == f.target_id)
    if f.since:
        stmt = stmt.where(AuditEntry.at >= f.since)
    if f.until:
        stmt = stmt.where(AuditEntry.at < f.until)
    if f.q:
        stmt = stmt.where(
            func.lower(AuditEntry.summary).contains(f.q.lower()[:200], autoescape=True)
        )
    if f.before_id:
        stmt = stmt.where(AuditEntry.id < f.before_id)
    return stmt


def entries(session: Session, f: Filter) -> list[AuditEntry]:
    """Newest first, at most ``f.limit`` (capped at :data:`MAX_PAGE`)."""
    limit = max(1, min(f.limit, MAX_PAGE))
    return list(session.scalars(_query(f).order_by(AuditEntry.id.desc()).limit(limit)))


def for_target(session: Session, target_type: str, target_id: str) -> list[AuditEntry]:
    """Everything done to one thing, oldest first (an activity's timeline)."""
    return list(
        session.scalars(
            select(AuditEntry)
            .where(AuditEntry.target_type == target_type, AuditEntry.target_id == target_id)
            .order_by(AuditEntry.id)
        )
    )


def entry_json(e: AuditEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": e.at.isoformat().replace("+00:00", "Z"),
        "actor": e.actor,
        "actor_kind": e.actor_kind,
        "on_behalf_of": e.on_behalf_of,
        "action": e.action,
        "target_type": e.target_type,
        "target_id": e.target_id,
        "summary": e.summary,
        "details": e.details,
        "client": e.client,
        "via": e.via,
    }


def who(e: AuditEntry) -> str:
    """The actor as a person reads it."""
    if e.actor_kind == "admin_token":
        return "admin token"
    return e.actor or e.actor_kind
