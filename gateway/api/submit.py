"""Storing one envelope: every rule checked inside the writer's transaction.

Runs in the store's writer thread (``store.async_write``), so the checks and
the insert see one consistent state and concurrent posts cannot race on
``seq``. A refusal raises ``ApiError``; its savepoint rolls back and nothing
else in the batch is affected.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, and_, func, insert, select, update

from gateway.api.errors import ApiError
from gateway.store.schema import (
    CHECKED_IN,
    QUEUED,
    RECALLED,
    REJECTED,
    STORED,
    activities,
    attachments,
    envelopes,
)
from outpost.forms import FormDefinition, validate_submission
from outpost.wire.schemas import EnvelopeBody, WireEnvelope


@lru_cache(maxsize=256)
def parse_form(form_json: str) -> FormDefinition:
    return FormDefinition.model_validate_json(form_json)


def body_hash(body: EnvelopeBody) -> str:
    """SHA-256 of the posted body in canonical form (key order and spacing don't matter)."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def first_state(status: str) -> str:
    return QUEUED if status == "completed" else STORED


def answer(row: Any) -> dict[str, Any]:
    """The 201 answer; rebuilt from fields that never change, so a retry gets the same."""
    return {
        "envelope_id": row.envelope_id,
        "activity_id": row.activity_id,
        "seq": row.seq,
        "status": row.status,
        "state": first_state(row.status),
        "received_at": row.received_at.isoformat().replace("+00:00", "Z"),
    }


def completed_lock(conn: Connection, activity_id: str) -> bool:
    """True once the activity has a completed envelope that central has not rejected."""
    return (
        conn.execute(
            select(envelopes.c.envelope_id)
            .where(
                envelopes.c.activity_id == activity_id,
                envelopes.c.status == "completed",
                envelopes.c.state != REJECTED,
            )
            .limit(1)
        ).first()
        is not None
    )


def store_envelope(
    conn: Connection,
    body: EnvelopeBody,
    digest: str,
    author: str,
    received_at: datetime,
) -> tuple[dict[str, Any], bool]:
    """Store ``body`` for ``author``; return ``(answer, replayed)``."""
    envelope_id = str(body.envelope_id)
    existing = conn.execute(
        select(
            envelopes.c.envelope_id,
            envelopes.c.activity_id,
            envelopes.c.seq,
            envelopes.c.status,
            envelopes.c.received_at,
            envelopes.c.author,
            envelopes.c.body_hash,
        ).where(envelopes.c.envelope_id == envelope_id)
    ).first()
    if existing is not None:
        if existing.body_hash == digest and existing.author == author:
            return answer(existing), True
        raise ApiError(
            409,
            "envelope_conflict",
            "An envelope with this envelope_id was already stored with a different body; "
            "a new envelope needs a new id.",
        )

    act = conn.execute(select(activities).where(activities.c.id == body.activity_id)).first()
    if act is None or author not in (act.responsible, act.holder):
        raise ApiError(
            404,
            "activity_not_found",
            f"No activity {body.activity_id!r} is checked out to you on this gateway.",
        )
    if act.state == RECALLED:
        raise ApiError(
            409,
            "activity_canceled",
            f"Central canceled this activity: {act.recall_reason or 'no reason given'}.",
        )
    if act.state == CHECKED_IN:
        raise ApiError(
            409, "activity_checked_in", "This activity was already uploaded and checked in."
        )
    if completed_lock(conn, act.id):
        raise ApiError(
            409, "activity_completed", "This activity is completed and can no longer be changed."
        )
    last = conn.execute(
        select(func.max(envelopes.c.seq)).where(envelopes.c.activity_id == act.id)
    ).scalar_one()
    expected = (last or 0) + 1
    if body.seq != expected:
        raise ApiError(
            409,
            "seq_mismatch",
            f"seq must be {expected}, the next one for this activity (got {body.seq}).",
            expected_seq=expected,
        )

    problems = validate_submission(
        parse_form(act.form), body.record, body.tables, list(body.attachments)
    )
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ApiError(
            422,
            "invalid_submission",
            f"The form is not valid: {problems[0]}{more}.",
            problems=problems,
        )
    if body.attachments:
        wanted = set(body.attachments)
        complete = set(
            conn.execute(
                select(attachments.c.sha256).where(
                    and_(attachments.c.sha256.in_(wanted), attachments.c.complete.is_(True))
                )
            ).scalars()
        )
        missing = sorted(wanted - complete)
        if missing:
            raise ApiError(
                422,
                "attachment_missing",
                "Upload these files completely before sending the envelope: "
                + ", ".join(m[:12] + "…" for m in missing),
                missing=missing,
            )

    wire = WireEnvelope(
        envelope_id=body.envelope_id,
        activity_id=body.activity_id,
        seq=body.seq,
        base_version=body.base_version,
        status=body.status,
        created_at=body.created_at,
        received_at=received_at,
        author=author,
        form_version=body.form_version or act.form_version,
        record=body.record,
        tables=body.tables,
        attachments=body.attachments,
    )
    text = wire.model_dump_json()
    state = first_state(body.status)
    row = {
        "envelope_id": envelope_id,
        "activity_id": body.activity_id,
        "author": author,
        "seq": body.seq,
        "status": body.status,
        "base_version": body.base_version,
        "created_at": body.created_at,
        "received_at": received_at,
        "form_version": wire.form_version,
        "body": text,
        "body_hash": digest,
        "size": len(text),
        "state": state,
        "attempts": 0,
    }
    conn.execute(insert(envelopes).values(**row))
    if body.status == "completed":
        # Rule 4: only a completed activity uploads — its drafts go with it, in order.
        conn.execute(
            update(envelopes)
            .where(envelopes.c.activity_id == act.id, envelopes.c.state == STORED)
            .values(state=QUEUED)
        )
    return answer(_Row(row)), False


class _Row:
    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)
