"""The LAN API's handlers (DESIGN "Gateway LAN API")."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, BinaryIO

from aiohttp import ClientConnectionError, ClientPayloadError, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import outpost
from gateway.api import inputs
from gateway.api.errors import ApiError, disk_full
from gateway.api.inputs import SignIn, read_body
from gateway.api.keys import (
    AUTH_KEY,
    BACKHAUL_KEY,
    BLOBS_KEY,
    CONFIG_KEY,
    DISK_KEY,
    METRICS_KEY,
    STARTED_KEY,
    STORE_KEY,
    UPLOAD_LOCKS_KEY,
    principal,
)
from gateway.api.openapi import (
    ISO,
    RANGE,
    UPLOAD_HEADERS,
    UPLOAD_STATE,
    USER,
    described,
    openapi_document,
    served,
)
from gateway.api.scope import sees_whole_gateway
from gateway.replication.service import replication_status
from gateway.store.activities import UpsertActivity
from gateway.store.attachments import CompleteUpload, FindAttachment, RecordUpload
from gateway.store.blobs import BlobFiles
from gateway.store.queries import (
    ActivityDetail,
    ActivityVisible,
    ListActivities,
    ListEnvelopes,
    StoreStatus,
)
from gateway.store.store import database_bytes
from gateway.store.submissions import FindEnvelope, StoreEnvelope, answer, body_hash
from outpost.times import iso, utcnow
from outpost.wire.schemas import EnvelopeBody

logger = logging.getLogger(__name__)
routes = web.RouteTableDef()

UPLOAD_CHUNK = 256 * 1024
# Another user may take over a partial upload only once it has sat idle this long.
UPLOAD_CLAIM_S = 3600.0


# --- health, metrics, docs ----------------------------------------------------


@routes.get("/healthz")
@described(
    "Liveness",
    {"200": {"type": "object", "properties": {"status": {"const": "ok"}}}},
    errors={"503": "store_closed: the gateway's store is not open"},
    public=True,
)
async def healthz(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    if not store.is_open:
        raise ApiError(503, "store_closed", "The gateway's store is not open.")
    return web.json_response({"status": "ok"})


@routes.get("/metrics")
@described(
    "Prometheus metrics: public on the LAN by default; lan.metrics_auth = true "
    "wants a signed-in user's bearer token, lan.metrics_token its own fixed one",
    {"200": "text exposition format"},
    errors={"401": "a token is configured and none (or another) was sent"},
    public=True,
)
async def metrics(request: web.Request) -> web.Response:
    app = request.app
    m = app[METRICS_KEY]
    store = app[STORE_KEY]
    status = await store.async_read(StoreStatus())
    for state, n in status["counts"].items():
        m.envelopes.labels(state).set(n)
    m.oldest_pending.set(status["oldest_pending_s"] or 0)
    disk = await app[DISK_KEY].async_snapshot()
    m.disk_free.set(disk["free_bytes"])
    m.disk_low.set(1 if disk["low"] else 0)
    m.backhaul_up.set(1 if app[BACKHAUL_KEY].is_up else 0)
    m.store_batches.set(store.batches)
    m.store_items.set(store.items)
    return web.Response(
        body=generate_latest(m.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


@routes.get("/api/v1/openapi.json")
@described("This document", {"200": {"type": "object"}})
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(served(request.app)))


# --- session ------------------------------------------------------------------


@routes.post("/api/v1/session")
@described(
    "Sign in offline against the credentials central pushed",
    {
        "200": {
            "type": "object",
            "required": ["token", "user", "expires_at"],
            "properties": {"token": {"type": "string"}, "user": USER, "expires_at": ISO},
        }
    },
    errors={
        "400": "malformed body",
        "401": "wrong username or password",
        "403": "this user may not work offline",
        "429": "too many failed sign-ins: locked for a while (Retry-After)",
        "503": "signin_busy: many sign-ins at once (Retry-After), or restarting",
    },
    body=SignIn,
    public=True,
)
async def sign_in(request: web.Request) -> web.Response:
    body = await read_body(request, SignIn)
    client = request.remote or "unknown"
    try:
        token, who = await request.app[AUTH_KEY].async_sign_in(body.username, body.password, client)
    except ApiError as exc:
        if exc.status in (401, 429):
            request.app[METRICS_KEY].signin_failures.inc()
        raise
    return web.json_response(
        {"token": token, "user": who.public(), "expires_at": iso(who.expires_at)}
    )


@routes.get("/api/v1/session")
@described(
    "The signed-in user now: {user: {username, display_name, site_lead}, expires_at}",
    {"200": "the session"},
)
async def who_am_i(request: web.Request) -> web.Response:
    """The signed-in user as the gateway knows them now (a site-lead grant may have changed)."""
    who = principal(request)
    return web.json_response({"user": who.public(), "expires_at": iso(who.expires_at)})


@routes.delete("/api/v1/session")
@described("Sign out (the device then wipes its data)", {"204": "signed out"})
async def sign_out(request: web.Request) -> web.Response:
    await request.app[AUTH_KEY].async_sign_out(principal(request))
    return web.Response(status=204)


# --- activities -----------------------------------------------------------------


@routes.get("/api/v1/activities")
@described(
    "The signed-in user's offline activities",
    {
        "200": {
            "type": "object",
            "required": ["activities"],
            "properties": {"activities": {"type": "array"}},
        }
    },
)
async def list_activities(request: web.Request) -> web.Response:
    user = principal(request).username
    found = await request.app[STORE_KEY].async_read(ListActivities(user))
    return web.json_response({"activities": found})


@routes.get("/api/v1/activities/{activity_id}")
@described(
    "One activity: form definition, status, latest envelope",
    {"200": {"type": "object", "required": ["id", "form"]}},
    errors={"404": "not checked out to you here"},
)
async def get_activity(request: web.Request) -> web.Response:
    user = principal(request).username
    activity_id = inputs.activity_id(request)
    found = await request.app[STORE_KEY].async_read(ActivityDetail(user, activity_id))
    if found is None:
        raise ApiError(
            404,
            "activity_not_found",
            f"No activity {activity_id!r} is checked out to you on this gateway.",
        )
    return web.json_response(found)


@routes.post("/api/v1/activities/{activity_id}/checkout")
@described(
    "Take an approved activity offline through the gateway (needs backhaul)",
    {"200": {"type": "object", "required": ["checked_out", "activity"]}},
    errors={
        "404": "no such activity id",
        "409": "central refused (its code and reason)",
        "502": "bad_central_answer: central answered about another activity",
        "503": "backhaul_down: no link to central (or restarting)",
        "504": "central did not answer in time",
    },
)
async def checkout(request: web.Request) -> web.Response:
    user = principal(request).username
    activity_id = inputs.activity_id(request)
    backhaul = request.app[BACKHAUL_KEY]
    down = ApiError(
        503,
        "backhaul_down",
        "The gateway has no connection to central right now, and taking an activity "
        "offline needs one; try again when the link is up.",
    )
    if not backhaul.is_up:
        raise down
    try:
        result = await backhaul.async_checkout(activity_id, user)
    except ConnectionError:
        raise down from None
    except TimeoutError:
        raise ApiError(
            504, "checkout_timeout", "Central did not answer the check-out in time; try again."
        ) from None
    if not result.ok:
        raise ApiError(
            409,
            result.code or "checkout_refused",
            result.reason or "Central refused to check this activity out.",
        )
    if result.activity is not None:
        activity = result.activity
        if activity.id != activity_id:
            logger.warning("central answered a check-out of %s with %s", activity_id, activity.id)
            raise ApiError(
                502, "bad_central_answer", "Central answered about another activity; try again."
            )
        now = utcnow()
        await request.app[STORE_KEY].async_write(UpsertActivity(activity, user, now))
    found = await request.app[STORE_KEY].async_read(ActivityDetail(user, activity_id))
    return web.json_response({"checked_out": True, "activity": found})


# --- envelopes ------------------------------------------------------------------


@routes.post("/api/v1/envelopes")
@described(
    "Store an envelope; 201 only after it is committed; the same envelope_id "
    "with the same body returns the first answer (Idempotent-Replayed: true)",
    {
        "201": {
            "type": "object",
            "required": ["envelope_id", "activity_id", "seq", "state", "received_at"],
        }
    },
    errors={
        "400": "malformed JSON, wrong types, out-of-range values (problems name "
        "each field), missing or unknown fields",
        "404": "activity not checked out to you here",
        "409": "envelope_conflict, seq_mismatch, activity_completed, activity_canceled, "
        "activity_checked_in, form_version (a form version this gateway does not have)",
        "422": "invalid_submission (problems) or attachment_missing",
        "507": "disk_full: below the free-space floor",
    },
    body=EnvelopeBody,
)
async def post_envelope(request: web.Request) -> web.Response:
    app = request.app
    user = principal(request).username
    body = await read_body(request, EnvelopeBody, "invalid_envelope")
    digest = body_hash(body)
    store = app[STORE_KEY]
    disk = app[DISK_KEY]
    free = await disk.async_free_bytes()  # one reading: the cache may refresh meanwhile
    if free < disk.floor_bytes:
        # A retry of something already saved still gets its answer; new data waits.
        row = await store.async_read(FindEnvelope(str(body.envelope_id)))
        if row is None or row.body_hash != digest or row.author != user:
            raise disk_full(free, disk.floor_bytes)
        return _created(answer(row), replayed=True)
    received_at = utcnow()
    result, replayed = await store.async_write(StoreEnvelope(body, digest, user, received_at))
    if not replayed:
        app[METRICS_KEY].envelopes_stored.labels(body.status).inc()
    return _created(result, replayed)


def _created(result: dict[str, Any], replayed: bool) -> web.Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return web.json_response(result, status=201, headers=headers)


@routes.get("/api/v1/envelopes")
@described(
    "The user's envelopes and their states (stored, queued, sent, applied, rejected)",
    {
        "200": {
            "type": "object",
            "required": ["envelopes"],
            "properties": {"envelopes": {"type": "array"}},
        }
    },
    errors={"404": "activity not checked out to you here"},
    params=(
        {"name": "activity_id", "in": "query", "required": False, "schema": {"type": "string"}},
    ),
)
async def list_envelopes(request: web.Request) -> web.Response:
    user = principal(request).username
    activity_id = inputs.query_activity_id(request)
    store = request.app[STORE_KEY]
    if activity_id is not None and not await store.async_read(ActivityVisible(user, activity_id)):
        raise ApiError(
            404,
            "activity_not_found",
            f"No activity {activity_id!r} is checked out to you on this gateway.",
        )
    found = await store.async_read(ListEnvelopes(user, activity_id))
    return web.json_response({"envelopes": found})


# --- attachments ----------------------------------------------------------------


def _upload_state(row: Any, sha: str) -> dict[str, Any]:
    return {
        "sha256": sha,
        "size": row.size if row else None,
        "received": row.received if row else 0,
        "complete": bool(row.complete) if row else False,
    }


def _offset_headers(state: dict[str, Any]) -> dict[str, str]:
    headers = {
        "Upload-Offset": str(state["received"]),
        "X-Upload-Complete": "true" if state["complete"] else "false",
    }
    if state["size"] is not None:
        headers["Upload-Length"] = str(state["size"])
    return headers


@routes.head("/api/v1/attachments/{sha256}")
@described(
    "How much of a blob has arrived (Upload-Offset, Upload-Length, X-Upload-Complete)",
    {"200": "known upload", "404": "nothing received yet"},
    errors={"400": "the address is not a SHA-256"},
    head=True,
    headers={c: UPLOAD_HEADERS for c in ("200", "404")},
)
async def head_attachment(request: web.Request) -> web.Response:
    sha = inputs.sha256(request)
    row = await request.app[STORE_KEY].async_read(FindAttachment(sha))
    state = _upload_state(row, sha)
    return web.Response(status=200 if row else 404, headers=_offset_headers(state))


@routes.put("/api/v1/attachments/{sha256}")
@described(
    "Resumable upload of a blob (Content-Range); verified against its SHA-256; "
    "an upload in progress belongs to the user who started it",
    {
        "200": {"description": "already complete", **UPLOAD_STATE},
        "201": {"description": "complete and verified", **UPLOAD_STATE},
        "202": {"description": "part stored; continue at Upload-Offset", **UPLOAD_STATE},
    },
    errors={
        "400": "bad address or Content-Range, a body not matching its range, or the "
        "upload was cut off (continue at Upload-Offset)",
        "409": "size_mismatch (another total than it started with) or "
        "upload_in_progress (another user's upload)",
        "411": "no Content-Length",
        "413": "larger than lan.max_attachment_bytes",
        "416": "continue at Upload-Offset",
        "422": "hash_mismatch: start again",
        "507": "disk_full: below the free-space floor",
    },
    body={"type": "string", "format": "binary"},
    body_type="application/octet-stream",
    params=(RANGE,),
    headers={c: UPLOAD_HEADERS for c in ("200", "201", "202")},
)
async def put_attachment(request: web.Request) -> web.Response:
    app = request.app
    sha = inputs.sha256(request)
    user = principal(request).username
    async with app[UPLOAD_LOCKS_KEY].async_hold(sha):
        return await _upload(request, sha, user)


async def _upload(request: web.Request, sha: str, user: str) -> web.Response:
    app = request.app
    store = app[STORE_KEY]
    blobs = app[BLOBS_KEY]
    loop = asyncio.get_running_loop()
    row = await store.async_read(FindAttachment(sha))
    if row is not None and row.complete:
        state = _upload_state(row, sha)
        return web.json_response(state, headers=_offset_headers(state))
    start, end, total = inputs.content_range(request)
    await _async_check_continues(request, row, sha, user, start, total)
    await app[DISK_KEY].async_check()
    now = utcnow()
    fh = await loop.run_in_executor(None, blobs.open_at, sha, start)
    stop = end + 1  # the body must be exactly START..END
    try:
        written, cut = await _async_receive(request, blobs, fh, start, stop)
    finally:
        durable = await asyncio.shield(loop.run_in_executor(None, blobs.finish, fh))
        await asyncio.shield(store.async_write(RecordUpload(sha, total, durable, user, now)))
    if cut is not None:
        logger.info("upload of %s cut at %d of %d bytes", sha[:12], durable, total)
        raise ApiError(400, "upload_interrupted", "The upload was cut off; resume it.")
    if written < stop:
        state = {"sha256": sha, "size": total, "received": durable, "complete": False}
        raise ApiError(
            400,
            "range_mismatch",
            f"The body is shorter than Content-Range says ({written - start} of "
            f"{stop - start} bytes); continue at Upload-Offset.",
            headers=_offset_headers(state),
            received=durable,
        )
    if durable < total:
        state = {"sha256": sha, "size": total, "received": durable, "complete": False}
        return web.json_response(state, status=202, headers=_offset_headers(state))
    ok = await loop.run_in_executor(None, blobs.verify_and_commit, sha)
    if not ok:
        await store.async_write(RecordUpload(sha, total, 0, user, now))
        raise ApiError(
            422,
            "hash_mismatch",
            "The file's SHA-256 does not match the address it was sent to; "
            "upload it again from the start.",
        )
    rel = blobs.relative(blobs.final_path(sha))
    await store.async_write(CompleteUpload(sha, rel))
    state = {"sha256": sha, "size": total, "received": total, "complete": True}
    return web.json_response(state, status=201, headers=_offset_headers(state))


async def _async_check_continues(
    request: web.Request, row: Any, sha: str, user: str, start: int, total: int
) -> None:
    """Refuse a part that cannot continue this upload: too large, another's, another size,
    or not starting where the received bytes end (416 with Upload-Offset)."""
    limit = request.app[CONFIG_KEY].lan.max_attachment_bytes
    if total > limit:
        raise ApiError(
            413, "attachment_too_large", f"Files may be at most {limit // (1024 * 1024)} MB."
        )
    received = row.received if row is not None else 0
    if row is not None and received > 0 and row.uploaded_by not in (None, user):
        # Bound to its uploader: another user's PUT must not truncate it.
        blobs = request.app[BLOBS_KEY]
        idle = await asyncio.get_running_loop().run_in_executor(None, blobs.partial_idle_s, sha)
        if idle < UPLOAD_CLAIM_S:
            raise ApiError(
                409,
                "upload_in_progress",
                "Another crew member is uploading this file right now; "
                "it will be here once they finish.",
            )
    elif row is not None and row.size != total and received > 0:
        raise ApiError(
            409,
            "size_mismatch",
            f"This upload was started with a total size of {row.size} bytes, not {total}.",
        )
    if start > received:
        state = _upload_state(row, sha)
        raise ApiError(
            416,
            "range_not_satisfiable",
            f"The upload must continue at byte {received}.",
            headers=_offset_headers(state),
            received=received,
        )


async def _async_receive(
    request: web.Request, blobs: BlobFiles, fh: BinaryIO, start: int, stop: int
) -> tuple[int, BaseException | None]:
    """Write the body at ``start`` (never past ``stop``): where it ended, and a cut link if one.

    What arrived before a cut is kept: a cut link must not restart a 5 MB photo.
    """
    loop = asyncio.get_running_loop()
    written = start
    try:
        async for chunk in request.content.iter_chunked(UPLOAD_CHUNK):
            if written + len(chunk) > stop:
                raise ApiError(
                    400,
                    "range_mismatch",
                    f"The body is longer than Content-Range says ({stop - start} bytes).",
                )
            await loop.run_in_executor(None, blobs.write, fh, chunk)
            written += len(chunk)
    except (ClientPayloadError, ClientConnectionError, ConnectionResetError) as exc:
        return written, exc
    return written, None


# --- status ---------------------------------------------------------------------


@routes.get("/api/v1/status")
@described(
    "Backhaul, last sync, counts by state (the whole gateway), oldest pending, "
    "the user's rejected envelopes and refused files (a site lead's: everyone's), disk",
    {
        "200": {
            "type": "object",
            "required": ["gateway", "backhaul", "envelopes", "rejected", "disk"],
        }
    },
)
async def status(request: web.Request) -> web.Response:
    app = request.app
    config = app[CONFIG_KEY]
    store = app[STORE_KEY]
    who = principal(request)
    only = None if sees_whole_gateway(who) else who.username
    data = await store.async_read(StoreStatus(only))
    backhaul = app[BACKHAUL_KEY].status()
    disk = await app[DISK_KEY].async_snapshot()
    db_bytes = await asyncio.get_running_loop().run_in_executor(None, database_bytes, store.path)
    return web.json_response(
        {
            "gateway": {
                "id": config.gateway.id,
                "site": config.gateway.site,
                "version": outpost.__version__,
                "uptime_s": round(time.monotonic() - app[STARTED_KEY], 3),
            },
            "backhaul": backhaul,
            "last_sync": backhaul.get("last_sync") or data["last_sync"],
            "envelopes": data["counts"],
            "oldest_pending_s": data["oldest_pending_s"],
            "devices": data["devices"],
            "rejected": data["rejected"],
            "activities": data["activities"],
            "attachments_incomplete": data["attachments_incomplete"],
            # Attachments of completed activities still to go to central, and
            # any central refused (with its reason).
            "attachments_upload": data["attachments_upload"],
            "disk": {**disk, "db_bytes": db_bytes},
            "replication": replication_status(app),
        }
    )
