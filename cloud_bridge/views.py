"""The central admin API's handlers (DESIGN "Central admin API").

Each handler parses and validates its body, runs its rule in a DB thread,
publishes what the change means for gateways (after the commit), and answers
JSON. The route table at the bottom also feeds the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import text
from sqlalchemy.orm import Session

from cloud_bridge import fleet, rules
from cloud_bridge.admin import BLOBS_KEY, FLEET_KEY, MQTT_KEY, RUNNER_KEY, Handler
from cloud_bridge.blobs import SHA256_RE
from cloud_bridge.errors import CentralError, bad_request
from cloud_bridge.handler import push_for_all, results_messages
from cloud_bridge.models import Activity, ActivityType, Gateway, LedgerEntry, User, utcnow
from outpost.wire.codec import describe_validation
from outpost.wire.schemas import Dispatch, Recall

logger = logging.getLogger(__name__)

STATES = ("online", "offline", "canceled")


# --- request bodies -------------------------------------------------------------


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ActivityCreate(Body):
    title: str = Field(min_length=1, max_length=300)
    type: str = Field(min_length=1, max_length=64)
    responsible: str = Field(min_length=1, max_length=64)
    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")


class ActivityPatch(Body):
    title: str | None = Field(default=None, min_length=1, max_length=300)
    responsible: str | None = Field(default=None, min_length=1, max_length=64)


class ApproveBody(Body):
    approver: str = Field(min_length=1, max_length=64)


class DispatchBody(Body):
    gateway_id: str = Field(min_length=1, max_length=64)


class CancelBody(Body):
    reason: str = Field(default="Canceled by central.", min_length=1, max_length=2000)


class UserBody(Body):
    password: str | None = Field(default=None, min_length=8, max_length=1024)
    offline: bool | None = None
    display_name: str | None = Field(default=None, max_length=200)


B = TypeVar("B", bound=BaseModel)


async def read_json(request: web.Request) -> Any:
    if not request.can_read_body:
        raise bad_request("The request needs a JSON body.", "body_required")
    raw = await request.read()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(f"The body is not valid JSON: {exc}.", "invalid_json") from None


async def read_body(request: web.Request, model: type[B], *, optional: bool = False) -> B:
    data: Any = {}
    if request.can_read_body or not optional:
        data = await read_json(request)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise bad_request(
            f"The body is not valid: {describe_validation(exc)}.", "invalid_body"
        ) from None


# --- serialisation ------------------------------------------------------------------


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def activity_json(a: Activity) -> dict[str, Any]:
    return {
        "id": a.id,
        "title": a.title,
        "type": a.type,
        "responsible": a.responsible,
        "approver": a.approver,
        "approved_at": iso(a.approved_at),
        "state": a.state,
        "holder_gateway": a.holder_gateway,
        "holder_user": a.holder_user,
        "checked_out_at": iso(a.checked_out_at),
        "version": a.version,
        "canceled_at": iso(a.canceled_at),
        "created_at": iso(a.created_at),
        "updated_at": iso(a.updated_at),
    }


def type_json(t: ActivityType) -> dict[str, Any]:
    return {"name": t.name, "offline": t.offline, "form": t.form, "form_version": t.form_version}


def user_json(u: User) -> dict[str, Any]:
    return {
        "username": u.username,
        "offline": u.offline,
        "display_name": u.display_name,
        "updated_at": iso(u.updated_at),
    }


def envelope_json(e: LedgerEntry, held: set[str]) -> dict[str, Any]:
    """An envelope for the admin; ``held``: blobs central holds (see :func:`envelopes_json`)."""
    return {
        "envelope_id": e.envelope_id,
        "gateway_id": e.gateway_id,
        "activity_id": e.activity_id,
        "seq": e.seq,
        "status": e.status,
        "author": e.author,
        "base_version": e.base_version,
        "form_version": e.form_version,
        "outcome": e.outcome,
        "code": e.code,
        "reason": e.reason,
        "created_at": iso(e.created_at),
        "received_at": iso(e.received_at),
        "arrived_at": iso(e.arrived_at),
        "applied_at": iso(e.applied_at),
        "activity_version": e.activity_version,
        "checked_in": e.checked_in,
        "attachments": e.attachments,
        "missing_attachments": rules.missing(e.attachments, held),
        "batch_id": e.batch_id,
    }


def envelopes_json(session: Session, entries: list[LedgerEntry]) -> list[dict[str, Any]]:
    """Envelopes for the admin, with what central holds of their attachments in one query."""
    held = rules.held_blobs(session, (sha for e in entries for sha in e.attachments))
    return [envelope_json(e, held) for e in entries]


# --- handlers ---------------------------------------------------------------------------


async def _tx(request: web.Request, fn: Any) -> Any:
    return await request.app[RUNNER_KEY].async_tx(fn)


async def _push_users(request: web.Request) -> None:
    pushes = await _tx(request, push_for_all)
    if pushes:
        sent = await request.app[MQTT_KEY].async_push_users(pushes)
        logger.info("pushed users and permissions to %d of %d gateways", sent, len(pushes))


async def healthz(request: web.Request) -> web.Response:
    def ping(session: Session) -> None:
        session.execute(text("SELECT 1"))

    db_ok = True
    try:
        await _tx(request, ping)
    except Exception:
        logger.exception("database health check failed")
        db_ok = False
    mqtt_ok = request.app[MQTT_KEY].connected
    status = 200 if db_ok else 503
    return web.json_response(
        {"status": "ok" if db_ok else "degraded", "database": db_ok, "mqtt": mqtt_ok},
        status=status,
    )


async def openapi(request: web.Request) -> web.Response:
    from cloud_bridge.openapi import document

    return web.json_response(document())


async def put_activity_type(request: web.Request) -> web.Response:
    definition = rules.parse_type_definition(await read_json(request))

    def work(s: Session) -> tuple[dict[str, Any], bool]:
        t, created = rules.put_activity_type(s, definition)
        return type_json(t), created

    body, created = await _tx(request, work)
    await _push_users(request)  # offline types are part of the snapshot
    return web.json_response(body, status=201 if created else 200)


async def list_activity_types(request: web.Request) -> web.Response:
    def work(s: Session) -> list[dict[str, Any]]:
        from sqlalchemy import select

        return [type_json(t) for t in s.scalars(select(ActivityType).order_by(ActivityType.name))]

    return web.json_response({"activity_types": await _tx(request, work)})


async def put_user(request: web.Request) -> web.Response:
    username = request.match_info["username"]
    body = await read_body(request, UserBody)

    def work(s: Session) -> tuple[dict[str, Any], bool]:
        u, created = rules.put_user(s, username, body.password, body.offline, body.display_name)
        return user_json(u), created

    out, created = await _tx(request, work)
    await _push_users(request)
    return web.json_response(out, status=201 if created else 200)


async def list_users(request: web.Request) -> web.Response:
    def work(s: Session) -> list[dict[str, Any]]:
        from sqlalchemy import select

        return [user_json(u) for u in s.scalars(select(User).order_by(User.username))]

    return web.json_response({"users": await _tx(request, work)})


async def create_activity(request: web.Request) -> web.Response:
    body = await read_body(request, ActivityCreate)
    out = await _tx(
        request,
        lambda s: activity_json(
            rules.create_activity(s, body.title, body.type, body.responsible, body.id)
        ),
    )
    return web.json_response(out, status=201)


async def list_activities(request: web.Request) -> web.Response:
    state: str | None = request.query.get("state", "online")
    if state == "all":
        state = None
    elif state not in STATES:
        raise bad_request("state must be one of online, offline, canceled or all.", "invalid_state")
    out = await _tx(request, lambda s: [activity_json(a) for a in rules.list_activities(s, state)])
    return web.json_response({"activities": out})


async def get_activity(request: web.Request) -> web.Response:
    aid = request.match_info["activity_id"]
    return web.json_response(
        await _tx(request, lambda s: activity_json(rules.get_activity(s, aid)))
    )


async def patch_activity(request: web.Request) -> web.Response:
    aid = request.match_info["activity_id"]
    body = await read_body(request, ActivityPatch)
    out = await _tx(
        request,
        lambda s: activity_json(rules.update_activity(s, aid, body.title, body.responsible)),
    )
    return web.json_response(out)


async def approve_activity(request: web.Request) -> web.Response:
    aid = request.match_info["activity_id"]
    body = await read_body(request, ApproveBody)
    out = await _tx(request, lambda s: activity_json(rules.approve(s, aid, body.approver)))
    return web.json_response(out)


@dataclass
class _CheckedOut:
    json: dict[str, Any]
    dispatch: Dispatch
    checkout_no: int


async def dispatch_activity(request: web.Request) -> web.Response:
    aid = request.match_info["activity_id"]
    body = await read_body(request, DispatchBody)

    def work(s: Session) -> _CheckedOut:
        activity, _wire = rules.check_out(s, aid, body.gateway_id)
        return _CheckedOut(
            activity_json(activity), rules.dispatch_of(s, activity), activity.checkout_no
        )

    done: _CheckedOut = await _tx(request, work)
    if not await request.app[MQTT_KEY].async_dispatch(done.dispatch):
        undone = await _tx(
            request, lambda s: rules.undo_check_out(s, aid, body.gateway_id, done.checkout_no)
        )
        logger.warning(
            "dispatch of %s to %s not sent; check-out %s",
            aid,
            body.gateway_id,
            "undone" if undone else "kept",
        )
        raise CentralError(
            "broker_unavailable",
            "Central cannot reach the MQTT broker, so the dispatch was not sent; "
            + ("the activity stays online, try again." if undone else "retry later."),
            503,
        )
    logger.info("activity %s dispatched to gateway %s", aid, body.gateway_id)
    return web.json_response(done.json)


async def cancel_activity(request: web.Request) -> web.Response:
    aid = request.match_info["activity_id"]
    body = await read_body(request, CancelBody, optional=True)

    def work(s: Session) -> tuple[dict[str, Any], str | None, Any]:
        activity, holder, results = rules.cancel(s, aid, body.reason)
        return activity_json(activity), holder, results

    out, holder, results = await _tx(request, work)
    mqtt = request.app[MQTT_KEY]
    recall_sent = None
    if holder is not None:
        recall = Recall(
            gateway_id=holder, activity_id=aid, reason=body.reason, recalled_at=utcnow()
        )
        recall_sent = await mqtt.async_recall(recall)
    for message in results_messages(results):
        await mqtt.async_send(message)
    out["recalled_from"] = holder
    out["recall_sent"] = recall_sent
    return web.json_response(out)


async def get_record(request: web.Request) -> web.Response:
    aid = request.match_info["activity_id"]
    return web.json_response(await _tx(request, lambda s: rules.record_of(s, aid)))


async def get_envelope(request: web.Request) -> web.Response:
    eid = request.match_info["envelope_id"]
    out = await _tx(request, lambda s: envelopes_json(s, [rules.envelope_of(s, eid)])[0])
    return web.json_response(out)


async def list_envelopes(request: web.Request) -> web.Response:
    aid = request.query.get("activity_id")
    out = await _tx(request, lambda s: envelopes_json(s, rules.list_envelopes(s, aid)))
    return web.json_response({"envelopes": out})


async def get_attachment(request: web.Request) -> web.StreamResponse:
    sha = request.match_info["sha256"]
    if not SHA256_RE.fullmatch(sha):
        raise bad_request(
            "An attachment is named by its SHA-256: 64 lowercase hexadecimal characters.",
            "invalid_sha256",
        )
    path = request.app[BLOBS_KEY].path_of(sha)
    if not await asyncio.to_thread(path.is_file):
        raise CentralError(
            "not_found",
            f"Central does not hold attachment {sha}; its gateway may not have sent it yet.",
            404,
        )
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


def _thresholds(request: web.Request) -> fleet.Thresholds:
    return fleet.Thresholds.from_config(request.app[FLEET_KEY])


async def list_gateways(request: web.Request) -> web.Response:
    t = _thresholds(request)
    views = await _tx(request, lambda s: fleet.all_views(s, t))
    # False: central hears nobody right now, every figure is as last heard.
    return web.json_response(
        {"gateways": views, "broker_connected": request.app[MQTT_KEY].connected}
    )


def _gateway_or_404(s: Session, gid: str) -> Gateway:
    g = s.get(Gateway, gid)
    if g is None:
        raise CentralError("not_found", f"No gateway {gid!r} has been seen.", 404)
    return g


async def get_gateway(request: web.Request) -> web.Response:
    gid = request.match_info["gateway_id"]
    t = _thresholds(request)

    def work(s: Session) -> dict[str, Any]:
        return fleet.gateway_view(_gateway_or_404(s, gid), utcnow(), t)

    return web.json_response(await _tx(request, work))


async def get_gateway_history(request: web.Request) -> web.Response:
    gid = request.match_info["gateway_id"]
    try:
        limit = int(request.query.get("limit", "200"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 10_000:
        raise bad_request("limit must be a whole number from 1 to 10000.", "invalid_limit")

    def work(s: Session) -> list[dict[str, Any]]:
        _gateway_or_404(s, gid)
        return [fleet.history_json(h) for h in fleet.recent_history(s, gid, limit)]

    return web.json_response({"gateway_id": gid, "history": await _tx(request, work)})


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    public: bool = False


ROUTES: list[Route] = [
    Route("GET", "/healthz", healthz, "Liveness: database and broker", public=True),
    Route("GET", "/api/v1/openapi.json", openapi, "This API's OpenAPI document", public=True),
    Route("POST", "/api/v1/activity-types", put_activity_type, "Create or update an activity type"),
    Route("GET", "/api/v1/activity-types", list_activity_types, "List activity types"),
    Route("GET", "/api/v1/users", list_users, "List users"),
    Route("PUT", "/api/v1/users/{username}", put_user, "Create or update a user", UserBody),
    Route("POST", "/api/v1/activities", create_activity, "Create an activity", ActivityCreate),
    Route("GET", "/api/v1/activities", list_activities, "List activities (?state=online|offline)"),
    Route("GET", "/api/v1/activities/{activity_id}", get_activity, "One activity"),
    Route(
        "PATCH",
        "/api/v1/activities/{activity_id}",
        patch_activity,
        "Edit an activity online (409 checked_out while offline)",
        ActivityPatch,
    ),
    Route(
        "POST",
        "/api/v1/activities/{activity_id}/approve",
        approve_activity,
        "Approve an activity",
        ApproveBody,
    ),
    Route(
        "POST",
        "/api/v1/activities/{activity_id}/dispatch",
        dispatch_activity,
        "Check the activity out to a gateway (rules 1, 2) and send it down",
        DispatchBody,
    ),
    Route(
        "POST",
        "/api/v1/activities/{activity_id}/cancel",
        cancel_activity,
        "Cancel an activity; recalls it from its gateway",
        CancelBody,
    ),
    Route(
        "GET",
        "/api/v1/activities/{activity_id}/record",
        get_record,
        "The applied form data: parent record and child rows",
    ),
    Route("GET", "/api/v1/envelopes", list_envelopes, "Envelopes (?activity_id=)"),
    Route(
        "GET",
        "/api/v1/envelopes/{envelope_id}",
        get_envelope,
        "One envelope: applied or rejected, when and why",
    ),
    Route(
        "GET",
        "/api/v1/attachments/{sha256}",
        get_attachment,
        "An attachment's bytes (photo, signature), by SHA-256; 404 until a gateway sent it",
    ),
    Route(
        "GET",
        "/api/v1/gateways",
        list_gateways,
        "The fleet: each gateway's figures (with when each was heard), health and reasons",
    ),
    Route(
        "GET",
        "/api/v1/gateways/{gateway_id}",
        get_gateway,
        "One gateway: figures, health (ok, warn, critical) and reasons",
    ),
    Route(
        "GET",
        "/api/v1/gateways/{gateway_id}/history",
        get_gateway_history,
        "One gateway's recent heartbeats and state changes, newest first (?limit=)",
    ),
]


def add_routes(app: web.Application) -> None:
    for r in ROUTES:
        app.router.add_route(r.method, r.path, r.handler)
