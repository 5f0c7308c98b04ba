"""The central admin API's handlers (DESIGN "Central admin API").

Each handler parses and validates its body, runs its rule in a DB thread,
publishes what the change means for gateways (after the commit), and answers
JSON. The route table at the bottom also feeds the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text
from sqlalchemy.orm import Session

from cloud_bridge import audit, fleet, fleet_query, identity, people, rules, xlsform_views
from cloud_bridge.access import ACCESS_KEY, ACTOR_KEY, Route, async_check_password, async_sign_in
from cloud_bridge.app_keys import API_ROUTES_KEY, BLOBS_KEY, FLEET_KEY, MQTT_KEY, RUNNER_KEY
from cloud_bridge.errors import CentralError, bad_request
from cloud_bridge.handler import results_messages
from cloud_bridge.models import (
    Activity,
    ActivityType,
    ApiToken,
    Gateway,
    LedgerEntry,
    Record,
    User,
    utcnow,
)
from cloud_bridge.openapi import BYTES_ANSWER, GATEWAY_PAGE, GATEWAY_REF, document, json_answer
from cloud_bridge.permissions import ROLES, Action, Actor, owns, scope
from outpost.forms import ActivityTypeDef
from outpost.http import body as body_reader
from outpost.http.body import BodyCodes
from outpost.times import iso as iso
from outpost.wire.schemas import SHA256_RE, Dispatch, Recall
from outpost.wire.topics import GATEWAY_ID_PATTERN

logger = logging.getLogger(__name__)

STATES = ("online", "offline", "canceled")


# --- request bodies -------------------------------------------------------------


class Body(BaseModel):
    # strict: 0 is not false, "3" is not 3 (JSON has the types; a coerced one is a mistake)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _documented(pattern: str | None = None, **schema: Any) -> dict[str, Any]:
    """What the rules check for a field with their own error code, said in the document."""
    return {"json_schema_extra": {**({"pattern": pattern} if pattern else {}), **schema}}


_GATEWAY = GATEWAY_ID_PATTERN
_USERNAME = r"^[A-Za-z0-9_.@-]{1,64}$"


class ActivityCreate(Body):
    title: str = Field(min_length=1, max_length=300)
    type: str = Field(min_length=1, max_length=64)
    responsible: str = Field(min_length=1, max_length=64)
    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")


class ActivityPatch(Body):
    title: str | None = Field(default=None, min_length=1, max_length=300)
    responsible: str | None = Field(default=None, min_length=1, max_length=64)


class ApproveBody(Body):
    """A person approves with their own password; the admin token names the ``approver``."""

    password: str | None = Field(default=None, min_length=1, max_length=1024)
    approver: str | None = Field(
        default=None, min_length=1, max_length=64, **_documented(_USERNAME)
    )


class DispatchBody(Body):
    gateway_id: str = Field(min_length=1, max_length=64, **_documented(_GATEWAY))


class CancelBody(Body):
    reason: str = Field(default="Canceled by central.", min_length=1, max_length=2000)


class UserBody(Body):
    password: str | None = Field(default=None, min_length=8, max_length=1024)
    offline: bool | None = None
    display_name: str | None = Field(default=None, max_length=200)
    role: str | None = Field(default=None, max_length=16, **_documented(enum=[*ROLES, None]))
    sites: list[Annotated[str, Field(**_documented(_GATEWAY))]] | None = Field(
        default=None, max_length=people.MAX_SITES
    )
    site_lead: list[Annotated[str, Field(**_documented(_GATEWAY))]] | None = Field(
        default=None, max_length=people.MAX_SITES
    )
    disabled: bool | None = None


class SessionBody(Body):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class TokenBody(Body):
    name: str = Field(min_length=1, max_length=100)
    username: str | None = Field(
        default=None, min_length=1, max_length=64, **_documented(_USERNAME)
    )


B = TypeVar("B", bound=BaseModel)


# The admin API's codes for a body it cannot take (``outpost.http.body`` reads it);
# PostgreSQL takes no NUL in a text.
BODY = BodyCodes(
    empty="body_required",
    empty_message="The request needs a JSON body.",
    malformed="invalid_json",
    storable_text=True,
)


async def read_json(request: web.Request) -> Any:
    """The body as JSON of any shape (an activity type's definition)."""
    return await body_reader.read_json(request, BODY)


async def read_body(request: web.Request, model: type[B], *, optional: bool = False) -> B:
    return await body_reader.read_body(request, model, BODY, optional=optional)


# --- serialisation ------------------------------------------------------------------


def activity_json(a: Activity) -> dict[str, Any]:
    return {
        "id": a.id,
        "title": a.title,
        "type": a.type,
        "responsible": a.responsible,
        "approver": a.approver,
        "approved_at": iso(a.approved_at),
        "approved_via": a.approved_via,
        "created_by": a.created_by,
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


def user_json(u: User, sites: dict[str, bool]) -> dict[str, Any]:
    return {
        "username": u.username,
        "offline": u.offline,
        "display_name": u.display_name,
        "role": u.role,
        "sites": sorted(sites),
        "site_lead": sorted(g for g, lead in sites.items() if lead),
        "disabled": u.disabled,
        "updated_at": iso(u.updated_at),
    }


def token_json(t: ApiToken) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "username": t.username,
        "created_by": t.created_by,
        "created_at": iso(t.created_at),
        "last_used_at": iso(t.last_used_at),
        "revoked_at": iso(t.revoked_at),
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


def actor_of(request: web.Request) -> Actor:
    return request[ACTOR_KEY]


async def async_push_users(request: web.Request, gateways: Iterable[str] | None = None) -> None:
    """Send the user snapshot to ``gateways`` (default: every known one) at once."""
    wanted = None if gateways is None else set(gateways)

    def work(s: Session) -> list[Any]:
        known = rules.known_gateways(s)
        return [rules.user_push(s, g) for g in known if wanted is None or g in wanted]

    pushes = await _tx(request, work)
    if pushes:
        sent = await request.app[MQTT_KEY].async_push_users(pushes)
        logger.info("pushed users and permissions to %d of %d gateways", sent, len(pushes))


_push_users = async_push_users


def check_own_activity(actor: Actor, a: Activity) -> None:
    """A crew member sees only activities they are responsible for or hold."""
    if scope(actor, Action.ACTIVITIES_READ) == "own" and not owns(
        actor, a.responsible, a.holder_user
    ):
        raise CentralError(
            "forbidden", f"Activity {a.id!r} is not yours; you see only your own.", 403
        )


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
    return web.json_response(document(request.app[API_ROUTES_KEY]))


async def put_activity_type(request: web.Request) -> web.Response:
    if xlsform_views.is_xlsform(request):  # the spreadsheet itself (DESIGN contract table)
        return await xlsform_views.post_xlsform(request, async_put_activity_type)
    xlsform_views.upload_query(request)  # refuses ?name= / ?offline= with JSON
    body, created = await async_put_activity_type(request, await read_json(request))
    return web.json_response(body, status=201 if created else 200)


async def async_put_activity_type(
    request: web.Request, data: Any, **origin: Any
) -> tuple[dict[str, Any], bool]:
    """Create or update an activity type as the caller (the API and the Activity types page).

    ``origin`` goes into the audit entry (an XLSForm import says its file's form_id/version).
    """
    definition = rules.parse_type_definition(data)
    actor = actor_of(request)

    def work(s: Session) -> tuple[dict[str, Any], bool, list[Dispatch]]:
        before = s.get(ActivityType, definition.name)
        was = before.form_version if before is not None else None
        t, created = rules.put_activity_type(s, definition, actor.username)
        # A new version goes down to the gateways holding activities of the type.
        refresh = rules.dispatches_of_type(s, t.name) if t.form_version != was else []
        audit.record(
            s,
            actor,
            "type.create" if created else "type.update",
            "activity_type",
            t.name,
            f"{'created' if created else 'updated'} activity type {t.name!r} "
            f"(form version {t.form_version}{', offline' if t.offline else ''})"
            + (" from an XLSForm" if origin.get("source") == "xlsform" else ""),
            form_version=t.form_version,
            offline=t.offline,
            **origin,
        )
        return type_json(t), created, refresh

    body, created, refresh = await _tx(request, work)
    await _push_users(request)  # offline types are part of the snapshot
    await _async_send_new_version(request, body["name"], body["form_version"], refresh)
    return body, created


_SEND_AT_ONCE = 64  # dispatches of a new form version in flight at once


async def _async_send_new_version(
    request: web.Request, type_name: str, version: int, dispatches: list[Dispatch]
) -> None:
    """Send a type's new form version with each activity checked out to a gateway.

    One that does not reach the broker now goes when its gateway next comes
    online (``rules.dispatches_held_by``).
    """
    mqtt, sent = request.app[MQTT_KEY], 0
    for start in range(0, len(dispatches), _SEND_AT_ONCE):  # PUBACKs awaited together
        part = dispatches[start : start + _SEND_AT_ONCE]
        sent += sum(await asyncio.gather(*(mqtt.async_dispatch(d) for d in part)))
    if dispatches:
        logger.info(
            "form version %d of %r sent with %d of %d checked-out activities",
            version,
            type_name,
            sent,
            len(dispatches),
        )


async def list_activity_types(request: web.Request) -> web.Response:
    def work(s: Session) -> list[dict[str, Any]]:
        from sqlalchemy import select

        return [type_json(t) for t in s.scalars(select(ActivityType).order_by(ActivityType.name))]

    return web.json_response({"activity_types": await _tx(request, work)})


async def async_put_user(
    request: web.Request, username: str, change: people.UserChange
) -> people.Changed:
    """Create or change a user as the request's actor, then push to the gateways it touches.

    Shared by ``PUT /api/v1/users/{username}`` and the users page.
    """
    actor = actor_of(request)
    password_hash = None
    if change.password:
        password_hash = await request.app[ACCESS_KEY].passwords.async_hash(change.password)
    done: people.Changed = await _tx(
        request, lambda s: people.put_user(s, actor, username, change, password_hash)
    )
    if done.gateways:
        # A password change, a disable or a removal from a site reaches the gateway now.
        await async_push_users(request, done.gateways)
    return done


async def put_user(request: web.Request) -> web.Response:
    username = request.match_info["username"]
    body = await read_body(request, UserBody)
    change = people.UserChange(**body.model_dump())
    done = await async_put_user(request, username, change)
    out = await _tx(request, lambda s: user_json(done.user, people.sites_of(s, done.user.username)))
    return web.json_response(out, status=201 if done.created else 200)


async def list_users(request: web.Request) -> web.Response:
    def work(s: Session) -> list[dict[str, Any]]:
        sites = people.all_sites(s)
        return [user_json(u, sites.get(u.username, {})) for u in people.list_users(s)]

    return web.json_response({"users": await _tx(request, work)})


async def get_user(request: web.Request) -> web.Response:
    username = request.match_info["username"]

    def work(s: Session) -> dict[str, Any]:
        return user_json(people.get_user(s, username), people.sites_of(s, username))

    return web.json_response(await _tx(request, work))


# --- sessions and tokens --------------------------------------------------------------


async def create_session(request: web.Request) -> web.Response:
    body = await read_body(request, SessionBody)
    done = await async_sign_in(request, body.username, body.password, "api")
    return web.json_response(
        {
            "token": done.token,
            "user": done.user,
            "role": done.user["role"],
            "expires_at": done.expires_at,
        },
        status=201,
    )


async def delete_session(request: web.Request) -> web.Response:
    actor = actor_of(request)
    if actor.session_hash is None:
        raise bad_request(
            "Only a token from POST /api/v1/session can be signed out; revoke an API token "
            "with DELETE /api/v1/tokens/{id}.",
            "not_a_session",
        )
    token_hash = actor.session_hash

    def work(s: Session) -> None:
        identity.end_session(s, token_hash)
        audit.record(s, actor, "session.sign_out", "user", actor.username, "signed out")

    await _tx(request, work)
    return web.json_response({"signed_out": True})


def _token_owner(actor: Actor, wanted: str | None) -> str:
    """Whose tokens a request may touch: your own, or anyone's with tokens.manage."""
    from cloud_bridge.permissions import may

    if wanted is None or wanted == actor.username:
        if actor.username is None:
            raise bad_request("The admin token has no tokens of its own; name a username.")
        return actor.username
    if not may(actor, Action.TOKENS_MANAGE):
        raise CentralError("forbidden", "You may manage only your own API tokens.", 403)
    return wanted


async def list_tokens(request: web.Request) -> web.Response:
    actor = actor_of(request)
    from cloud_bridge.permissions import may

    wanted = request.query.get("username")
    if wanted is None and may(actor, Action.TOKENS_MANAGE) and actor.username is None:
        who = None
    else:
        who = _token_owner(actor, wanted)
    out = await _tx(request, lambda s: [token_json(t) for t in identity.tokens_of(s, who)])
    return web.json_response({"tokens": out})


async def create_token(request: web.Request) -> web.Response:
    actor = actor_of(request)
    body = await read_body(request, TokenBody)
    owner = _token_owner(actor, body.username)

    def work(s: Session) -> dict[str, Any]:
        people.get_user(s, owner)
        token, row = identity.create_token(s, owner, body.name, actor.username)
        audit.record(
            s,
            actor,
            "token.create",
            "user",
            owner,
            f"created API token {body.name!r} ({row.id}) for {owner!r}",
            token_id=row.id,
        )
        return {**token_json(row), "token": token}

    return web.json_response(await _tx(request, work), status=201)


async def revoke_token(request: web.Request) -> web.Response:
    actor = actor_of(request)
    token_id = request.match_info["token_id"]

    def work(s: Session) -> dict[str, Any]:
        row = s.get(ApiToken, token_id)
        if row is None:
            raise CentralError("not_found", f"No API token {token_id!r} exists.", 404)
        _token_owner(actor, row.username)
        identity.revoke_token(s, token_id)
        audit.record(
            s,
            actor,
            "token.revoke",
            "user",
            row.username,
            f"revoked API token {row.name!r} ({row.id}) of {row.username!r}",
            token_id=row.id,
        )
        return token_json(row)

    return web.json_response(await _tx(request, work))


# --- the audit log -------------------------------------------------------------------


def audit_filter(query: Any) -> audit.Filter:
    """``GET /api/v1/audit`` and the audit page read the same query parameters."""

    def opt(name: str, limit: int = 200) -> str | None:
        value = str(query.get(name, "")).strip()
        return value[:limit] or None

    def number(name: str, default: int | None, low: int, high: int) -> int | None:
        raw = opt(name, 20)
        if raw is None:
            return default
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise bad_request(
                f"{name} must be a whole number from {low} to {high}.", f"invalid_{name}"
            )
        return int(raw)

    def day(name: str) -> datetime | None:
        raw = opt(name, 40)
        if raw is None:
            return None
        parsed = fleet.parse_time(raw if "T" in raw else raw + "T00:00:00Z")
        if parsed is None or not 1970 <= parsed.year <= 9998:
            raise bad_request(
                f"{name} must be a date (YYYY-MM-DD) or a time in ISO 8601.", f"invalid_{name}"
            )
        return parsed

    return audit.Filter(
        actor=opt("actor", 64),
        action=opt("action", 64),
        target_type=opt("target_type", 32),
        target_id=opt("target_id"),
        since=day("from"),
        until=day("to"),
        q=opt("q"),
        before_id=number("before", None, 1, 2**62),
        limit=number("limit", 100, 1, audit.MAX_PAGE) or 100,
    )


async def list_audit(request: web.Request) -> web.Response:
    f = audit_filter(request.query)
    out = await _tx(request, lambda s: [audit.entry_json(e) for e in audit.entries(s, f)])
    return web.json_response(
        {"entries": out, "next_before": out[-1]["id"] if len(out) == f.limit else None}
    )


def create_activity_tx(
    s: Session, actor: Actor, title: str, type_name: str, responsible: str, aid: str | None
) -> Activity:
    a = rules.create_activity(s, title, type_name, responsible, aid)
    a.created_by = actor.username if actor.kind == "user" else None
    audit.record(
        s,
        actor,
        "activity.create",
        "activity",
        a.id,
        f"created activity {a.id!r} ({title!r}, type {type_name!r}) for {responsible!r}",
        title=title,
        type=type_name,
        responsible=responsible,
    )
    return a


async def create_activity(request: web.Request) -> web.Response:
    body = await read_body(request, ActivityCreate)
    actor = actor_of(request)
    out = await _tx(
        request,
        lambda s: activity_json(
            create_activity_tx(s, actor, body.title, body.type, body.responsible, body.id)
        ),
    )
    return web.json_response(out, status=201)


async def list_activities(request: web.Request) -> web.Response:
    state: str | None = request.query.get("state", "online")
    if state == "all":
        state = None
    elif state not in STATES:
        raise bad_request("state must be one of online, offline, canceled or all.", "invalid_state")
    actor = actor_of(request)
    own = scope(actor, Action.ACTIVITIES_READ) == "own"
    out = await _tx(
        request,
        lambda s: [
            activity_json(a)
            for a in rules.list_activities(s, state)
            if not own or owns(actor, a.responsible, a.holder_user)
        ],
    )
    return web.json_response({"activities": out})


async def get_activity(request: web.Request) -> web.Response:
    aid = request.match_info["activity_id"]
    actor = actor_of(request)

    def work(s: Session) -> dict[str, Any]:
        a = rules.get_activity(s, aid)
        check_own_activity(actor, a)
        return activity_json(a)

    return web.json_response(await _tx(request, work))


async def patch_activity(request: web.Request) -> web.Response:
    aid = request.match_info["activity_id"]
    body = await read_body(request, ActivityPatch)
    actor = actor_of(request)

    def work(s: Session) -> dict[str, Any]:
        a = rules.update_activity(s, aid, body.title, body.responsible)
        changes = body.model_dump(exclude_none=True)
        audit.record(
            s,
            actor,
            "activity.update",
            "activity",
            aid,
            f"edited activity {aid!r}: " + "; ".join(f"{k} → {v!r}" for k, v in changes.items()),
            **changes,
        )
        return activity_json(a)

    return web.json_response(await _tx(request, work))


async def async_approve(
    request: web.Request, aid: str, password: str | None, approver: str | None
) -> Activity:
    """Rule 1 for real: a person approves as themselves with their password; the admin
    token names the approver and is audited as acting on their behalf.

    Shared by ``POST /api/v1/activities/{id}/approve`` and the activity page.
    """
    actor = actor_of(request)
    if actor.is_admin_token:
        if not approver:
            raise bad_request(
                'With the admin token, name the responsible user: {"approver": "<username>"}.',
                "approver_required",
            )
        name, via = approver, "admin_token"
        text = f"approved activity {aid!r} on behalf of {name!r} by the admin token"
        on_behalf: dict[str, str] = {"on_behalf_of": name}
    else:
        name = await _async_approver_in_person(request, actor, aid, password, approver)
        via, text, on_behalf = (
            "password",
            f"{name!r} approved activity {aid!r} with their password",
            {},
        )

    def work(s: Session) -> Activity:
        a = rules.approve(s, aid, name)
        a.approved_via = via
        audit.record(
            s, actor, "activity.approve", "activity", aid, text, **on_behalf, version=a.version
        )
        return a

    activity: Activity = await _tx(request, work)
    return activity


async def _async_approver_in_person(
    request: web.Request, actor: Actor, aid: str, password: str | None, approver: str | None
) -> str:
    """A person approving as themselves: the activity's responsible user, password checked."""
    if approver is not None and approver != actor.username:
        raise bad_request(
            "You approve as yourself: send your password, not an approver.",
            "approver_not_allowed",
        )
    if not password:
        raise bad_request("Re-enter your password to approve.", "password_required")
    assert actor.username is not None
    name = actor.username

    def whose(s: Session) -> str:
        return rules.get_activity(s, aid).responsible

    responsible = await _tx(request, whose)
    if responsible != name:
        raise CentralError(
            rules.NOT_RESPONSIBLE,
            f"Only {responsible!r}, responsible for activity {aid!r}, may approve it.",
            403,
        )
    if await async_check_password(request, name, password) is None:
        raise CentralError(
            "bad_password", "That is not your password; the activity is not approved.", 403
        )
    return name


async def approve_activity(request: web.Request) -> web.Response:
    aid = request.match_info["activity_id"]
    body = await read_body(request, ApproveBody)
    activity = await async_approve(request, aid, body.password, body.approver)
    return web.json_response(activity_json(activity))


@dataclass
class _CheckedOut:
    json: dict[str, Any]
    dispatch: Dispatch
    checkout_no: int


async def async_dispatch(request: web.Request, aid: str, gateway_id: str) -> dict[str, Any]:
    """Check an activity out to a gateway and send it down (API and page)."""
    actor = actor_of(request)

    def work(s: Session) -> _CheckedOut:
        activity, _wire = rules.check_out(s, aid, gateway_id)
        audit.record(
            s,
            actor,
            "activity.dispatch",
            "activity",
            aid,
            f"dispatched activity {aid!r} to gateway {gateway_id!r} for {activity.holder_user!r}",
            gateway_id=gateway_id,
            checkout_no=activity.checkout_no,
        )
        return _CheckedOut(
            activity_json(activity), rules.dispatch_of(s, activity), activity.checkout_no
        )

    done: _CheckedOut = await _tx(request, work)
    if not await request.app[MQTT_KEY].async_dispatch(done.dispatch):

        def undo(s: Session) -> bool:
            undone = rules.undo_check_out(s, aid, gateway_id, done.checkout_no)
            if undone:
                audit.record(
                    s,
                    actor,
                    "activity.dispatch_undone",
                    "activity",
                    aid,
                    f"dispatch of {aid!r} to {gateway_id!r} not sent (no broker); it stays online",
                    gateway_id=gateway_id,
                )
            return undone

        undone = await _tx(request, undo)
        logger.warning(
            "dispatch of %s to %s not sent; check-out %s",
            aid,
            gateway_id,
            "undone" if undone else "kept",
        )
        raise CentralError(
            "broker_unavailable",
            "Central cannot reach the MQTT broker, so the dispatch was not sent; "
            + ("the activity stays online, try again." if undone else "retry later."),
            503,
        )
    logger.info("activity %s dispatched to gateway %s", aid, gateway_id)
    return done.json


async def dispatch_activity(request: web.Request) -> web.Response:
    aid = request.match_info["activity_id"]
    body = await read_body(request, DispatchBody)
    return web.json_response(await async_dispatch(request, aid, body.gateway_id))


async def async_cancel(request: web.Request, aid: str, reason: str) -> dict[str, Any]:
    """Cancel (recall) an activity; tells its gateway (API and page)."""
    actor = actor_of(request)

    def work(s: Session) -> tuple[dict[str, Any], str | None, Any]:
        activity, holder, results = rules.cancel(s, aid, reason)
        audit.record(
            s,
            actor,
            "activity.cancel",
            "activity",
            aid,
            f"recalled activity {aid!r}"
            + (f" from gateway {holder!r}" if holder else "")
            + f": {reason}",
            gateway_id=holder,
            reason=reason,
        )
        return activity_json(activity), holder, results

    out, holder, results = await _tx(request, work)
    mqtt = request.app[MQTT_KEY]
    recall_sent = None
    if holder is not None:
        recall = Recall(gateway_id=holder, activity_id=aid, reason=reason, recalled_at=utcnow())
        recall_sent = await mqtt.async_recall(recall)
    for message in results_messages(results):
        await mqtt.async_send(message)
    out["recalled_from"] = holder
    out["recall_sent"] = recall_sent
    answer: dict[str, Any] = out
    return answer


async def cancel_activity(request: web.Request) -> web.Response:
    aid = request.match_info["activity_id"]
    body = await read_body(request, CancelBody, optional=True)
    return web.json_response(await async_cancel(request, aid, body.reason))


async def get_record(request: web.Request) -> web.Response:
    aid = request.match_info["activity_id"]
    actor = actor_of(request)

    def work(s: Session) -> dict[str, Any]:
        check_own_activity(actor, rules.get_activity(s, aid))
        return rules.record_of(s, aid)

    return web.json_response(await _tx(request, work))


def own_activity_ids(s: Session, actor: Actor) -> set[str]:
    from sqlalchemy import or_, select

    return set(
        s.scalars(
            select(Activity.id).where(
                or_(Activity.responsible == actor.username, Activity.holder_user == actor.username)
            )
        )
    )


async def get_envelope(request: web.Request) -> web.Response:
    eid = request.match_info["envelope_id"]
    actor = actor_of(request)

    def work(s: Session) -> dict[str, Any]:
        entry = rules.envelope_of(s, eid)
        if scope(actor, Action.ACTIVITIES_READ) == "own":
            check_own_activity(actor, rules.get_activity(s, entry.activity_id))
        return envelopes_json(s, [entry])[0]

    return web.json_response(await _tx(request, work))


async def list_envelopes(request: web.Request) -> web.Response:
    aid = request.query.get("activity_id")
    actor = actor_of(request)

    def work(s: Session) -> list[dict[str, Any]]:
        entries = rules.list_envelopes(s, aid)
        if scope(actor, Action.ACTIVITIES_READ) == "own":
            mine = own_activity_ids(s, actor)
            entries = [e for e in entries if e.activity_id in mine]
        return envelopes_json(s, entries)

    return web.json_response({"envelopes": await _tx(request, work)})


def may_see_attachment(s: Session, actor: Actor, sha: str) -> bool:
    """A crew member sees the files of their own activities' records only."""
    if scope(actor, Action.ACTIVITIES_READ) != "own":
        return True
    from sqlalchemy import select

    mine = own_activity_ids(s, actor)
    if not mine:
        return False
    records = s.scalars(select(Record.attachments).where(Record.activity_id.in_(mine)))
    return any(sha in (atts or []) for atts in records)


async def get_attachment(request: web.Request) -> web.StreamResponse:
    sha = request.match_info["sha256"]
    if not SHA256_RE.fullmatch(sha):
        raise bad_request(
            "An attachment is named by its SHA-256: 64 lowercase hexadecimal characters.",
            "invalid_sha256",
        )
    actor = actor_of(request)
    if not await _tx(request, lambda s: may_see_attachment(s, actor, sha)):
        raise CentralError("forbidden", "This file belongs to an activity that is not yours.", 403)
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
    """One page of the fleet (keyset ``cursor``), filtered and sorted by the database.

    Without ``limit`` a small fleet gets every gateway (the answer before
    paging); beyond ``fleet_query.UNPAGED_MAX`` that is the first page, with
    ``next_cursor``.
    """
    t = _thresholds(request)
    fq = fleet_query.parse(request.query)
    now = utcnow()
    got = await _tx(request, lambda s: fleet_query.page(s, fq, t, now))
    # broker_connected False: central hears nobody right now, every figure is as last heard.
    return web.json_response(
        {
            "gateways": got.views,
            "total": got.total,
            "next_cursor": got.next_cursor,
            "as_of": fleet.iso(got.as_of),
            "broker_connected": request.app[MQTT_KEY].connected,
        }
    )


async def fleet_summary(request: web.Request) -> web.Response:
    """Counts by health, state and reason (the same filters as the list), listing nobody."""
    t = _thresholds(request)
    fq = fleet_query.parse(request.query)
    if fq.limit is not None or fq.after is not None:
        raise bad_request("The summary takes filters only (no limit, cursor).", "invalid_query")
    now = utcnow()
    got = await _tx(request, lambda s: fleet_query.summary(s, fq, t, now))
    return web.json_response({**got, "broker_connected": request.app[MQTT_KEY].connected})


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


A = Action

ROUTES: list[Route] = [
    Route(
        "GET",
        "/healthz",
        healthz,
        "Liveness: database and broker",
        A.PUBLIC,
        statuses={"503": "the database does not answer"},
    ),
    Route("GET", "/api/v1/openapi.json", openapi, "This API's OpenAPI document", A.PUBLIC),
    Route(
        "POST",
        "/api/v1/session",
        create_session,
        "A person signs in -> {token, user, role, expires_at}",
        A.PUBLIC,
        SessionBody,
        statuses={
            "201": "signed in",
            "401": "wrong username or password",
            "403": "the account is disabled",
            "429": "too many wrong guesses: signin_locked, with Retry-After",
            "503": "password checks are busy: busy, with Retry-After",
        },
    ),
    Route("DELETE", "/api/v1/session", delete_session, "Sign out (ends this token)", A.SIGNED_IN),
    Route(
        "POST",
        "/api/v1/activity-types",
        put_activity_type,
        "Create or update an activity type: its JSON definition, or an XLSForm (.xlsx) body",
        A.TYPES_WRITE,
        ActivityTypeDef,
        statuses={"201": "created"},
    ),
    Route(
        "GET", "/api/v1/activity-types", list_activity_types, "List activity types", A.TYPES_READ
    ),
    Route("GET", "/api/v1/users", list_users, "List users", A.USERS_READ),
    Route("GET", "/api/v1/users/{username}", get_user, "One user", A.USERS_READ),
    Route(
        "PUT",
        "/api/v1/users/{username}",
        put_user,
        "Create or update a user: password, offline, role, sites, site_lead, disabled",
        A.USERS_WRITE,
        UserBody,
        statuses={"201": "created", "503": "password work is busy, with Retry-After"},
    ),
    Route(
        "GET",
        "/api/v1/tokens",
        list_tokens,
        "Your API tokens (?username= someone's, with tokens.manage)",
        A.SIGNED_IN,
    ),
    Route(
        "POST",
        "/api/v1/tokens",
        create_token,
        "Create an API token for yourself (or, as admin, for username); shown once",
        A.SIGNED_IN,
        TokenBody,
        statuses={"201": "created; the token is shown this once"},
    ),
    Route(
        "DELETE",
        "/api/v1/tokens/{token_id}",
        revoke_token,
        "Revoke an API token (yours, or anyone's as admin)",
        A.SIGNED_IN,
    ),
    Route(
        "GET",
        "/api/v1/audit",
        list_audit,
        "The audit log, newest first (?actor=&action=&target_type=&target_id=&from=&to=&q=&before=&limit=)",
        A.AUDIT_READ,
    ),
    Route(
        "POST",
        "/api/v1/activities",
        create_activity,
        "Create an activity",
        A.ACTIVITIES_WRITE,
        ActivityCreate,
        statuses={"201": "created"},
    ),
    Route(
        "GET",
        "/api/v1/activities",
        list_activities,
        "List activities (?state=online|offline|canceled|all)",
        A.ACTIVITIES_READ,
    ),
    Route(
        "GET", "/api/v1/activities/{activity_id}", get_activity, "One activity", A.ACTIVITIES_READ
    ),
    Route(
        "PATCH",
        "/api/v1/activities/{activity_id}",
        patch_activity,
        "Edit an activity online (409 checked_out while offline)",
        A.ACTIVITIES_WRITE,
        ActivityPatch,
    ),
    Route(
        "POST",
        "/api/v1/activities/{activity_id}/approve",
        approve_activity,
        "Approve: the responsible user with {password}; the admin token with {approver}",
        A.ACTIVITIES_APPROVE,
        ApproveBody,
        statuses={
            "429": "too many wrong passwords, with Retry-After",
            "503": "password checks are busy, with Retry-After",
        },
    ),
    Route(
        "POST",
        "/api/v1/activities/{activity_id}/dispatch",
        dispatch_activity,
        "Check the activity out to a gateway (rules 1, 2) and send it down",
        A.ACTIVITIES_DISPATCH,
        DispatchBody,
        statuses={
            "503": "the broker is unreachable: broker_unavailable (the check-out was undone)"
        },
    ),
    Route(
        "POST",
        "/api/v1/activities/{activity_id}/cancel",
        cancel_activity,
        "Cancel an activity; recalls it from its gateway",
        A.ACTIVITIES_DISPATCH,
        CancelBody,
        body_optional=True,
    ),
    Route(
        "GET",
        "/api/v1/activities/{activity_id}/record",
        get_record,
        "The applied form data: parent record and child rows",
        A.ACTIVITIES_READ,
    ),
    Route(
        "GET", "/api/v1/envelopes", list_envelopes, "Envelopes (?activity_id=)", A.ACTIVITIES_READ
    ),
    Route(
        "GET",
        "/api/v1/envelopes/{envelope_id}",
        get_envelope,
        "One envelope: applied or rejected, when and why",
        A.ACTIVITIES_READ,
    ),
    Route(
        "GET",
        "/api/v1/attachments/{sha256}",
        get_attachment,
        "An attachment's bytes (photo, signature), by SHA-256; 404 until a gateway sent it",
        A.ACTIVITIES_READ,
        answer=BYTES_ANSWER,
    ),
    Route(
        "GET",
        "/api/v1/gateways",
        list_gateways,
        "One page of the fleet (?limit=&cursor=&health=&state=&q=&version=&heard_within="
        "&silent_for=&sort=&order=): each gateway's figures, health and reasons",
        A.FLEET_READ,
        answer=json_answer(GATEWAY_PAGE),
        params=tuple(fleet_query.openapi_parameters(fleet_query.PARAMS)),
    ),
    Route(
        "GET",
        "/api/v1/fleet/summary",
        fleet_summary,
        "Counts of gateways by health, state and reason (the list's filters), listing none",
        A.FLEET_READ,
        answer=json_answer(fleet_query.SUMMARY_SCHEMA),
        params=tuple(fleet_query.openapi_parameters(fleet_query.SUMMARY_PARAMETERS)),
    ),
    Route(
        "GET",
        "/api/v1/gateways/{gateway_id}",
        get_gateway,
        "One gateway: figures, health (ok, warn, critical) and reasons",
        A.FLEET_READ,
        answer=json_answer(GATEWAY_REF),
    ),
    Route(
        "GET",
        "/api/v1/gateways/{gateway_id}/history",
        get_gateway_history,
        "One gateway's recent heartbeats and state changes, newest first (?limit=)",
        A.FLEET_READ,
    ),
]
