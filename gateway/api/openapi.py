"""The LAN API's OpenAPI 3.1 document (``GET /api/v1/openapi.json``).

Every route the app registers must appear here, with every status its code
can answer (a test checks the routes both ways; schemathesis, against a real
gateway process, checks the statuses, bodies and headers). Statuses every
operation can give are added once, in ``_op``: 400 for a request holding a
value the gateway cannot read, 503 while it restarts, 401 where a token is
needed, 413 where a body is read. A path or method nobody serves answers 404
or 405 with ``Allow``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import outpost
from gateway.api.inputs import ACTIVITY_ID_RE, SHA256_RE, SignIn
from outpost.wire.schemas import EnvelopeBody

ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _op(
    summary: str,
    ok: dict[str, Any],
    *,
    errors: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
    body_type: str = "application/json",
    public: bool = False,
    params: list[dict[str, Any]] | None = None,
    head: bool = False,
    headers: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One operation; ``ok`` maps a status to a description or a JSON schema for its body."""
    responses: dict[str, Any] = {}
    for code, what in ok.items():
        if isinstance(what, str):
            responses[code] = {"description": what}
        else:
            responses[code] = {"description": what.pop("description", ""), "content": _json(what)}
        if headers and code in headers:
            responses[code]["headers"] = headers[code]
    common = {
        "400": "the request holds a value the gateway cannot read (its encoding, a number)",
        "503": "shutting_down: the gateway is restarting; try again shortly",
    }
    if not public:
        common["401"] = "no, invalid or expired token"
    if body is not None:
        common["413"] = "the body is larger than the gateway accepts"
    for code, text in {**common, **(errors or {})}.items():
        if code in responses:
            continue
        # A HEAD answer has no body.
        responses[code] = (
            {"description": text} if head else {"description": text, "content": _json(ERROR)}
        )
        if code == "429" or code == "503" or code == "507":
            responses[code]["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
    op: dict[str, Any] = {"summary": summary, "responses": dict(sorted(responses.items()))}
    if public:
        op["security"] = []
    if body is not None:
        op["requestBody"] = {"required": True, "content": {body_type: {"schema": body}}}
    if params:
        op["parameters"] = params
    return op


def _path_param(name: str, pattern: str, example: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": f"^{pattern}$"},
        "example": example,
    }


ACTIVITY = _path_param("activity_id", ACTIVITY_ID_RE.pattern, "act-1")
SHA = _path_param("sha256", SHA256_RE.pattern, "9f86d081" + "0" * 56)
RANGE = {
    "name": "Content-Range",
    "in": "header",
    "required": False,
    "schema": {
        "type": "string",
        "pattern": r"^bytes [0-9]{1,15}-[0-9]{1,15}/[0-9]{1,15}$",
        "example": "bytes 0-1048575/5242880",
    },
}
UPLOAD_HEADERS = {
    "Upload-Offset": {"schema": {"type": "string"}, "description": "bytes durably received"},
    "X-Upload-Complete": {"schema": {"type": "string", "enum": ["true", "false"]}},
}
_ISO = {"type": "string", "format": "date-time"}
_ISO_OR_NULL = {"type": ["string", "null"]}
USER = {
    "type": "object",
    "required": ["username"],
    "properties": {"username": {"type": "string"}, "display_name": {"type": ["string", "null"]}},
}
UPLOAD_STATE = {
    "type": "object",
    "required": ["sha256", "size", "received", "complete"],
    "properties": {
        "sha256": {"type": "string"},
        "size": {"type": ["integer", "null"]},
        "received": {"type": "integer"},
        "complete": {"type": "boolean"},
    },
}


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    envelope_schema = EnvelopeBody.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = envelope_schema.pop("$defs", {})
    paths: dict[str, Any] = {
        "/healthz": {
            "get": _op(
                "Liveness",
                {"200": {"type": "object", "properties": {"status": {"const": "ok"}}}},
                errors={"503": "store_closed: the gateway's store is not open"},
                public=True,
            )
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics: public on the LAN by default; lan.metrics_auth = true "
                "wants a signed-in user's bearer token, lan.metrics_token its own fixed one",
                {"200": "text exposition format"},
                errors={"401": "a token is configured and none (or another) was sent"},
                public=True,
            )
        },
        "/api/v1/openapi.json": {"get": _op("This document", {"200": {"type": "object"}})},
        "/api/v1/session": {
            "post": _op(
                "Sign in offline against the credentials central pushed",
                {
                    "200": {
                        "type": "object",
                        "required": ["token", "user", "expires_at"],
                        "properties": {
                            "token": {"type": "string"},
                            "user": USER,
                            "expires_at": _ISO,
                        },
                    }
                },
                errors={
                    "400": "malformed body",
                    "401": "wrong username or password",
                    "403": "this user may not work offline",
                    "429": "too many failed sign-ins: locked for a while (Retry-After)",
                    "503": "signin_busy: many sign-ins at once (Retry-After), or restarting",
                },
                body={"$ref": "#/components/schemas/SignIn"},
                public=True,
            ),
            "get": _op(
                "The signed-in user now: {user: {username, display_name, site_lead}, expires_at}",
                {"200": "the session"},
            ),
            "delete": _op("Sign out (the device then wipes its data)", {"204": "signed out"}),
        },
        "/api/v1/activities": {
            "get": _op(
                "The signed-in user's offline activities",
                {
                    "200": {
                        "type": "object",
                        "required": ["activities"],
                        "properties": {"activities": {"type": "array"}},
                    }
                },
            )
        },
        "/api/v1/activities/{activity_id}": {
            "get": _op(
                "One activity: form definition, status, latest envelope",
                {"200": {"type": "object", "required": ["id", "form"]}},
                errors={"404": "not checked out to you here"},
                params=[ACTIVITY],
            )
        },
        "/api/v1/activities/{activity_id}/checkout": {
            "post": _op(
                "Take an approved activity offline through the gateway (needs backhaul)",
                {"200": {"type": "object", "required": ["checked_out", "activity"]}},
                errors={
                    "404": "no such activity id",
                    "409": "central refused (its code and reason)",
                    "502": "bad_central_answer: central answered about another activity",
                    "503": "backhaul_down: no link to central (or restarting)",
                    "504": "central did not answer in time",
                },
                params=[ACTIVITY],
            )
        },
        "/api/v1/envelopes": {
            "post": _op(
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
                    "activity_checked_in",
                    "422": "invalid_submission (problems) or attachment_missing",
                    "507": "disk_full: below the free-space floor",
                },
                body={"$ref": "#/components/schemas/EnvelopeBody"},
            ),
            "get": _op(
                "The user's envelopes and their states (stored, queued, sent, applied, rejected)",
                {
                    "200": {
                        "type": "object",
                        "required": ["envelopes"],
                        "properties": {"envelopes": {"type": "array"}},
                    }
                },
                errors={"404": "activity not checked out to you here"},
                params=[
                    {
                        "name": "activity_id",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                    }
                ],
            ),
        },
        "/api/v1/attachments/{sha256}": {
            "put": _op(
                "Resumable upload of a blob (Content-Range); verified against its SHA-256; "
                "an upload in progress belongs to the user who started it",
                {
                    "200": {"description": "already complete", **UPLOAD_STATE},
                    "201": {"description": "complete and verified", **UPLOAD_STATE},
                    "202": {
                        "description": "part stored; continue at Upload-Offset",
                        **UPLOAD_STATE,
                    },
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
                params=[SHA, RANGE],
                headers={c: UPLOAD_HEADERS for c in ("200", "201", "202")},
            ),
            "head": _op(
                "How much of a blob has arrived (Upload-Offset, Upload-Length, X-Upload-Complete)",
                {"200": "known upload", "404": "nothing received yet"},
                errors={"400": "the address is not a SHA-256"},
                params=[SHA],
                head=True,
                headers={c: UPLOAD_HEADERS for c in ("200", "404")},
            ),
        },
        "/api/v1/site": {
            "get": _op(
                "The whole gateway for its site lead: link and since when, envelopes by state, "
                "the oldest waiting, every rejection and what happened after it, files to go "
                "up, disk and the full-disk policy, replica, certificate",
                {"200": "the gateway's state"},
                errors={"403": "not_site_lead: only the site lead central granted"},
            )
        },
        "/api/v1/status": {
            "get": _op(
                "Backhaul, last sync, counts by state (the whole gateway), oldest pending, "
                "the user's rejected envelopes and refused files (a site lead's: everyone's), disk",
                {
                    "200": {
                        "type": "object",
                        "required": ["gateway", "backhaul", "envelopes", "rejected", "disk"],
                    }
                },
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Outpost gateway LAN API", "version": outpost.__version__},
        "paths": paths,
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                **defs,
                "EnvelopeBody": envelope_schema,
                "SignIn": SignIn.model_json_schema(),
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
            },
        },
    }
