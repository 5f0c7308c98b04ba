"""Every version of an activity type's form: ``GET /api/v1/activity-types/{name}[/versions/{n}]``."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud_bridge.access import Route
from cloud_bridge.app_keys import RUNNER_KEY
from cloud_bridge.errors import CentralError, bad_request
from cloud_bridge.models import ActivityType, ActivityTypeVersion
from cloud_bridge.permissions import Action
from cloud_bridge.views import iso, type_json


def versions(session: Session, name: str) -> list[ActivityTypeVersion]:
    return list(
        session.scalars(
            select(ActivityTypeVersion)
            .where(ActivityTypeVersion.type_name == name)
            .order_by(ActivityTypeVersion.form_version.desc())
        )
    )


def version_json(v: ActivityTypeVersion, *, form: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "form_version": v.form_version,
        "created_at": iso(v.created_at),
        "created_by": v.created_by,
        "fields": len(v.form.get("fields", [])),
        "tables": [t["name"] for t in v.form.get("tables", [])],
    }
    if form:
        out["form"] = v.form
        out["offline"] = v.offline
    return out


def type_with_versions(session: Session, name: str) -> dict[str, Any]:
    t = session.get(ActivityType, name)
    if t is None:
        raise CentralError("not_found", f"No activity type {name!r} exists.", 404)
    return {**type_json(t), "versions": [version_json(v) for v in versions(session, name)]}


def one_version(session: Session, name: str, number: int) -> dict[str, Any]:
    v = session.get(ActivityTypeVersion, (name, number))
    if v is None:
        raise CentralError(
            "not_found", f"Activity type {name!r} has no form version {number}.", 404
        )
    return {"name": name, **version_json(v, form=True)}


async def get_type(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    out = await request.app[RUNNER_KEY].async_tx(lambda s: type_with_versions(s, name))
    return web.json_response(out)


async def get_version(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    raw = request.match_info["version"]
    if not raw.isdigit() or len(raw) > 9:
        raise bad_request("A form version is a whole number like 1, 2, 3.", "invalid_version")
    number = int(raw)
    out = await request.app[RUNNER_KEY].async_tx(lambda s: one_version(s, name, number))
    return web.json_response(out)


ROUTES: list[Route] = [
    Route(
        "GET",
        "/api/v1/activity-types/{name}",
        get_type,
        "One activity type: its current form and every kept version, newest first",
        Action.TYPES_READ,
    ),
    Route(
        "GET",
        "/api/v1/activity-types/{name}/versions/{version}",
        get_version,
        "One kept version of an activity type's form",
        Action.TYPES_READ,
    ),
]
