"""The site lead's view of the whole gateway: ``GET /api/v1/site``.

Crew members see only their own work; a site lead (granted by central per
gateway, pushed with the users) also sees everything this gateway holds and
how it is doing: the link to central and since when, the envelopes by state
with the oldest one waiting, every rejection with what happened after it,
files waiting to go up, disk and the full-disk policy, the replica and the
certificate. The web app's Site screen polls it while open, so it is one
read transaction of indexed queries (``docs/benchmarks.md`` has its cost).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import Connection, and_, func, select

import outpost
from gateway.api.errors import ApiError
from gateway.api.keys import BACKHAUL_KEY, CONFIG_KEY, DISK_KEY, STARTED_KEY, STORE_KEY, principal
from gateway.api.openapi import described
from gateway.api.scope import sees_whole_gateway
from gateway.auth import Principal
from gateway.blob_upload import upload_counts
from gateway.replication.service import replication_status
from gateway.store.ops import get_meta, utcnow
from gateway.store.queries import iso
from gateway.store.schema import (
    ENVELOPE_STATES,
    META_LAST_SYNC,
    QUEUED,
    REJECTED,
    SENT,
    STORED,
    activities,
    envelopes,
    sessions,
    users,
)
from gateway.store.store import database_bytes

routes = web.RouteTableDef()

REJECTIONS_LIMIT = 200  # newest first; the total is always given


def site_lead(request: web.Request) -> Principal:
    """The signed-in user, if central made them site lead of this gateway (else 403)."""
    who = principal(request)
    if not sees_whole_gateway(who):  # the one check (gateway/api/scope.py)
        raise ApiError(
            403,
            "not_site_lead",
            "Only this gateway's site lead sees the whole gateway; a central admin grants it.",
        )
    return who


def _age_s(at: datetime | None, now: datetime) -> float | None:
    return None if at is None else round(max(0.0, (now - at).total_seconds()), 3)


def _oldest_waiting(conn: Connection, now: datetime) -> dict[str, Any] | None:
    """The envelope waiting longest to reach central (completed work: queued or sent)."""
    row = conn.execute(
        select(
            envelopes.c.envelope_id,
            envelopes.c.activity_id,
            envelopes.c.author,
            envelopes.c.seq,
            envelopes.c.state,
            envelopes.c.received_at,
            activities.c.title,
        )
        .join(activities, activities.c.id == envelopes.c.activity_id)
        .where(envelopes.c.state.in_((QUEUED, SENT)))
        .order_by(envelopes.c.received_at, envelopes.c.envelope_id)
        .limit(1)
    ).first()
    if row is None:
        return None
    return {
        "envelope_id": row.envelope_id,
        "activity_id": row.activity_id,
        "activity_title": row.title,
        "author": row.author,
        "seq": row.seq,
        "state": row.state,
        "received_at": iso(row.received_at),
        "age_s": _age_s(row.received_at, now),
    }


def _after(rejected: Any, latest: Any | None) -> dict[str, Any]:
    """What became of a rejection: corrected by a later save, or still open, or moot."""
    if latest is not None and latest.seq > rejected.seq:
        return {
            "what": "corrected",
            "seq": latest.seq,
            "status": latest.status,
            "state": latest.state,
            "at": iso(latest.received_at),
        }
    if rejected.activity_state == "recalled":
        return {"what": "canceled", "at": iso(rejected.recalled_at)}
    if rejected.activity_state == "checked_in":
        return {"what": "checked_in", "at": iso(rejected.checked_in_at)}
    return {"what": "open"}


def _rejections(conn: Connection) -> tuple[list[dict[str, Any]], int]:
    total = conn.execute(
        select(func.count()).select_from(envelopes).where(envelopes.c.state == REJECTED)
    ).scalar_one()
    rows = conn.execute(
        select(
            envelopes.c.envelope_id,
            envelopes.c.activity_id,
            envelopes.c.author,
            envelopes.c.seq,
            envelopes.c.status,
            envelopes.c.code,
            envelopes.c.reason,
            envelopes.c.received_at,
            envelopes.c.result_at,
            activities.c.title,
            activities.c.state.label("activity_state"),
            activities.c.recalled_at,
            activities.c.checked_in_at,
            users.c.display_name,
        )
        .join(activities, activities.c.id == envelopes.c.activity_id)
        .outerjoin(users, users.c.username == envelopes.c.author)
        .where(envelopes.c.state == REJECTED)
        .order_by(envelopes.c.result_at.desc(), envelopes.c.envelope_id)
        .limit(REJECTIONS_LIMIT)
    ).all()
    # The newest save of each activity with a rejection (ix_envelopes_activity_seq).
    ids = sorted({r.activity_id for r in rows})
    latest: dict[str, Any] = {}
    if ids:
        newest = (
            select(envelopes.c.activity_id, func.max(envelopes.c.seq).label("seq"))
            .where(envelopes.c.activity_id.in_(ids))
            .group_by(envelopes.c.activity_id)
            .subquery()
        )
        for row in conn.execute(
            select(
                envelopes.c.activity_id,
                envelopes.c.seq,
                envelopes.c.status,
                envelopes.c.state,
                envelopes.c.received_at,
            ).join(
                newest,
                and_(
                    newest.c.activity_id == envelopes.c.activity_id,
                    newest.c.seq == envelopes.c.seq,
                ),
            )
        ).all():
            latest[row.activity_id] = row
    out = [
        {
            "envelope_id": r.envelope_id,
            "activity_id": r.activity_id,
            "activity_title": r.title,
            "author": r.author,
            "author_name": r.display_name,
            "seq": r.seq,
            "status": r.status,
            "code": r.code,
            "reason": r.reason,
            "saved_at": iso(r.received_at),
            "rejected_at": iso(r.result_at),
            "after": _after(r, latest.get(r.activity_id)),
        }
        for r in rows
    ]
    return out, int(total)


def site_state(conn: Connection) -> dict[str, Any]:
    """Everything the store knows for the Site screen (one read transaction)."""
    now = utcnow()
    counts = dict.fromkeys(ENVELOPE_STATES, 0)
    for state, n in conn.execute(
        select(envelopes.c.state, func.count()).group_by(envelopes.c.state)
    ).all():
        counts[state] = int(n)
    rejections, total = _rejections(conn)
    activity_counts = {
        str(state): int(n)
        for state, n in conn.execute(
            select(activities.c.state, func.count()).group_by(activities.c.state)
        ).all()
    }
    signed_in = conn.execute(
        select(func.count(func.distinct(sessions.c.username))).where(sessions.c.expires_at > now)
    ).scalar_one()
    return {
        "envelopes": counts,
        "drafts": counts[STORED],
        "oldest_waiting": _oldest_waiting(conn, now),
        "rejections": rejections,
        "rejections_total": total,
        "rejections_open": sum(1 for r in rejections if r["after"]["what"] == "open"),
        "activities": activity_counts,
        "crew_signed_in": int(signed_in),
        "files": upload_counts(conn),
        "last_sync": get_meta(conn, META_LAST_SYNC),
    }


def _certificate(expires_at: str | None) -> dict[str, Any]:
    if not expires_at:
        return {"expires_at": None, "days_left": None}
    at = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
    return {
        "expires_at": iso(at),
        "days_left": round((at - utcnow()).total_seconds() / 86400, 1),
    }


@routes.get("/api/v1/site")
@described(
    "The whole gateway for its site lead: link and since when, envelopes by state, "
    "the oldest waiting, every rejection and what happened after it, files to go "
    "up, disk and the full-disk policy, replica, certificate",
    {"200": "the gateway's state"},
    errors={"403": "not_site_lead: only the site lead central granted"},
)
async def get_site(request: web.Request) -> web.Response:
    site_lead(request)
    app = request.app
    config = app[CONFIG_KEY]
    store = app[STORE_KEY]
    data = await store.async_read(site_state)
    stored_sync = data.pop("last_sync")
    link = app[BACKHAUL_KEY].status()
    disk = await app[DISK_KEY].async_snapshot()
    db_bytes = await asyncio.get_running_loop().run_in_executor(None, database_bytes, store.path)
    return web.json_response(
        {
            "as_of": iso(utcnow()),
            "gateway": {
                "id": config.gateway.id,
                "site": config.gateway.site,
                "version": outpost.__version__,
                "uptime_s": round(time.monotonic() - app[STARTED_KEY], 3),
            },
            "backhaul": {
                "link": link.get("link"),
                "since": link.get("since"),
                "last_error": link.get("last_error"),
                "broker": link.get("broker"),
            },
            "last_sync": link.get("last_sync") or stored_sync,
            **data,
            "disk": {**disk, "db_bytes": db_bytes},
            "replication": replication_status(app),
            "certificate": _certificate(link.get("certificate_expires_at")),
        }
    )
