"""Envelopes central cannot apply as sent, so that each costs one rejection, not a batch.

A batch whose frame is sound but one of whose envelopes fails the wire
contract (a value out of its bounds, a missing field: an old or broken
gateway) is read envelope by envelope (:func:`read_batch`): the good ones go
to replay as usual, a bad one becomes a **placeholder** rejected
``invalid_envelope`` with the problem named. Replay makes the same kind of
placeholder, rejected ``unstorable``, for an envelope the database refused
(:mod:`cloud_bridge.replay`).

A placeholder carries what identifies the envelope and what the ledger can
store: its id, activity, author and seq when they are valid, ``0`` for a
number that cannot be stored, central's arrival time for a time that cannot.
Only an envelope without a usable id or activity cannot be answered at all;
it is dropped and noted on the gateway, like an undecodable message.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from cloud_bridge import rejections
from cloud_bridge.rejections import Refusal
from outpost.wire.codec import (
    MAX_DECODED,
    DecodeError,
    decode_document,
    describe_validation,
    has_lone_surrogate,
)
from outpost.wire.schemas import (
    INT32_MAX,
    MAX_BATCH_ENVELOPES,
    ActivityId,
    EnvelopeBatch,
    GatewayId,
    Sha256,
    Username,
    WireEnvelope,
)

_activity_id: TypeAdapter[str] = TypeAdapter(ActivityId)
_username: TypeAdapter[str] = TypeAdapter(Username)
_sha256: TypeAdapter[str] = TypeAdapter(Sha256)
_aware: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)
_UUID_TEXT = re.compile(r"[0-9a-fA-F-]{32,36}")


class _BatchFrame(BaseModel):
    """An envelope batch with its envelopes not yet looked at."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["envelope_batch"]
    gateway_id: GatewayId
    batch_id: uuid.UUID
    sent_at: AwareDatetime
    envelopes: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH_ENVELOPES)


@dataclass
class Intake:
    """A batch as replay takes it: valid envelopes and placeholders, and what was refused."""

    batch: EnvelopeBatch
    refused: dict[str, Refusal] = field(default_factory=dict)
    unanswerable: list[str] = field(default_factory=list)  # problems, for the gateway's row


def read_batch(payload: bytes, arrived: datetime, max_bytes: int = MAX_DECODED) -> Intake:
    """Read an envelope batch one envelope at a time; DecodeError when its frame is bad."""
    document = decode_document(payload, max_bytes)
    try:
        frame = _BatchFrame.model_validate(document)
    except ValidationError as exc:
        raise DecodeError(describe_validation(exc)) from None
    envelopes: list[WireEnvelope] = []
    refused: dict[str, Refusal] = {}
    unanswerable: list[str] = []
    for i, raw in enumerate(frame.envelopes):
        if has_lone_surrogate(raw):
            problem = "a text holds a lone UTF-16 surrogate (it is not Unicode)"
        else:
            try:
                envelopes.append(WireEnvelope.model_validate(raw))
                continue
            except ValidationError as exc:
                problem = describe_validation(exc)
        stand_in = placeholder(raw, arrived)
        if stand_in is None:
            unanswerable.append(
                f"envelope {i + 1} of batch {frame.batch_id} has no valid envelope_id and "
                f"activity_id, so it cannot be answered: {problem}"
            )
            continue
        envelopes.append(stand_in)
        refused[str(stand_in.envelope_id)] = (
            rejections.INVALID_ENVELOPE,
            f"The envelope does not fit the wire contract ({problem}); central did not "
            "apply it. Correct the form and submit it again.",
        )
    batch = EnvelopeBatch.model_construct(
        kind="envelope_batch",
        gateway_id=frame.gateway_id,
        batch_id=frame.batch_id,
        sent_at=frame.sent_at,
        envelopes=envelopes,
    )
    return Intake(batch, refused, unanswerable)


def placeholder(raw: Mapping[str, Any], arrived: datetime) -> WireEnvelope | None:
    """A stand-in holding only the storable parts of ``raw``; None without id and activity."""
    envelope_id = _uuid(raw.get("envelope_id"))
    activity_id = _valid(_activity_id, raw.get("activity_id"))
    if envelope_id is None or activity_id is None:
        return None
    status = raw.get("status")
    return WireEnvelope.model_construct(
        envelope_id=envelope_id,
        activity_id=activity_id,
        seq=_number(raw.get("seq"), 1),
        base_version=_number(raw.get("base_version"), 0),
        status=status if status in ("draft", "completed") else "draft",
        created_at=_time(raw.get("created_at"), arrived),
        received_at=_time(raw.get("received_at"), arrived),
        author=_valid(_username, raw.get("author")) or "",
        form_version=_number(raw.get("form_version"), 1),
        record={},
        tables={},
        attachments=_attachments(raw.get("attachments")),
    )


def _uuid(value: Any) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str) and _UUID_TEXT.fullmatch(value):
        try:
            return uuid.UUID(value)
        except ValueError:
            return None
    return None


def _valid(adapter: TypeAdapter[str], value: Any) -> str | None:
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def _number(value: Any, least: int) -> int:
    """The value when every database column holds it (and it is at least ``least``), else 0."""
    if isinstance(value, int) and not isinstance(value, bool) and least <= value <= INT32_MAX:
        return value
    return 0


def _time(value: Any, fallback: datetime) -> datetime:
    try:
        parsed = value if isinstance(value, datetime) else _aware.validate_python(value)
        if parsed.tzinfo is None:
            return fallback
        return parsed.astimezone(UTC)  # year 1 at +01:00 is year 0 in UTC: no such datetime
    except (ValidationError, OverflowError, ValueError):
        return fallback


def _attachments(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [sha for sha in (_valid(_sha256, v) for v in value[:100]) if sha is not None]
