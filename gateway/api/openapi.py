"""The LAN API's OpenAPI 3.1 document (``GET /api/v1/openapi.json``).

Every route the app registers must appear here; a test checks both ways.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import outpost
from outpost.wire.schemas import EnvelopeBody

ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _op(
    summary: str,
    ok: dict[str, str],
    *,
    errors: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
    public: bool = False,
    params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {code: {"description": text} for code, text in ok.items()}
    for code, text in (errors or {}).items():
        responses[code] = {"description": text, "content": _json(ERROR)}
    if not public:
        responses.setdefault(
            "401", {"description": "no, invalid or expired token", "content": _json(ERROR)}
        )
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if public:
        op["security"] = []
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(body)}
    if params:
        op["parameters"] = params
    return op


def _path_param(name: str, pattern: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": pattern},
    }


ACTIVITY = _path_param("activity_id", "^[A-Za-z0-9_.:-]{1,64}$")
SHA = _path_param("sha256", "^[0-9a-f]{64}$")
RANGE = {
    "name": "Content-Range",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "example": "bytes 0-1048575/5242880"},
}


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    envelope_schema = EnvelopeBody.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = envelope_schema.pop("$defs", {})
    paths: dict[str, Any] = {
        "/healthz": {"get": _op("Liveness", {"200": "the gateway runs"}, public=True)},
        "/metrics": {
            "get": _op(
                "Prometheus metrics (token required when lan.metrics_auth)",
                {"200": "text exposition format"},
                public=True,
            )
        },
        "/api/v1/openapi.json": {"get": _op("This document", {"200": "OpenAPI 3.1"})},
        "/api/v1/session": {
            "post": _op(
                "Sign in offline against the credentials central pushed",
                {"200": "{token, user, expires_at}"},
                errors={
                    "400": "malformed body",
                    "401": "wrong username or password",
                    "403": "this user may not work offline",
                    "429": "too many failed sign-ins: locked for a while (Retry-After)",
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
            "get": _op("The signed-in user's offline activities", {"200": "{activities: [...]}"})
        },
        "/api/v1/activities/{activity_id}": {
            "get": _op(
                "One activity: form definition, status, latest envelope",
                {"200": "the activity"},
                errors={"404": "not checked out to you here"},
                params=[ACTIVITY],
            )
        },
        "/api/v1/activities/{activity_id}/checkout": {
            "post": _op(
                "Take an approved activity offline through the gateway (needs backhaul)",
                {"200": "{checked_out, activity}"},
                errors={
                    "409": "central refused (its code and reason)",
                    "503": "backhaul_down: no link to central",
                    "504": "central did not answer in time",
                },
                params=[ACTIVITY],
            )
        },
        "/api/v1/envelopes": {
            "post": _op(
                "Store an envelope; 201 only after it is committed; the same envelope_id "
                "with the same body returns the first answer",
                {"201": "{envelope_id, activity_id, seq, status, state, received_at}"},
                errors={
                    "400": "malformed JSON, wrong types, missing or unknown fields",
                    "404": "activity not checked out to you here",
                    "409": "envelope_conflict, seq_mismatch, activity_completed, activity_canceled",
                    "413": "body larger than lan.max_body_bytes",
                    "422": "invalid_submission (problems) or attachment_missing",
                    "507": "disk_full: below the free-space floor",
                },
                body={"$ref": "#/components/schemas/EnvelopeBody"},
            ),
            "get": _op(
                "The user's envelopes and their states (stored, queued, sent, applied, rejected)",
                {"200": "{envelopes: [...]}"},
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
                "Resumable upload of a blob (Content-Range); verified against its SHA-256",
                {
                    "200": "already complete",
                    "201": "complete and verified",
                    "202": "part stored; continue at Upload-Offset",
                },
                errors={
                    "400": "bad address or Content-Range, or the upload was cut off",
                    "409": "a different total size than the upload started with",
                    "411": "no Content-Length",
                    "413": "larger than lan.max_attachment_bytes",
                    "416": "continue at Upload-Offset",
                    "422": "hash_mismatch: start again",
                    "507": "disk_full: below the free-space floor",
                },
                body={"type": "string", "format": "binary"},
                params=[SHA, RANGE],
            ),
            "head": _op(
                "How much of a blob has arrived (Upload-Offset, Upload-Length, X-Upload-Complete)",
                {"200": "known upload", "404": "nothing received yet"},
                params=[SHA],
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
                "Backhaul, last sync, counts by state, oldest pending, rejected, attachments, disk",
                {"200": "the gateway's state"},
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
                "SignIn": {
                    "type": "object",
                    "required": ["username", "password"],
                    "additionalProperties": False,
                    "properties": {"username": {"type": "string"}, "password": {"type": "string"}},
                },
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
