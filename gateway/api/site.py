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

import outpost
from gateway.api.errors import ApiError
from gateway.api.keys import BACKHAUL_KEY, CONFIG_KEY, DISK_KEY, STARTED_KEY, STORE_KEY, principal
from gateway.api.openapi import described
from gateway.api.scope import sees_whole_gateway
from gateway.auth import Principal
from gateway.replication.service import replication_status
from gateway.store.site import SiteState
from gateway.store.store import database_bytes
from outpost.times import iso, utcnow

routes = web.RouteTableDef()


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
    data = await store.async_read(SiteState())
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
