"""Message schemas of the wire contract.

Every message is a strict pydantic model: unknown or missing fields are
errors. Each carries ``kind`` (the discriminator) and ``gateway_id`` (which
the receiver checks against the topic's).

Every value is bounded to what every supported database stores (SQLite, and
PostgreSQL whose ``INTEGER`` is 32-bit): integers that land in an
``INTEGER`` column are ``DbInt`` (0..2**31-1), byte counts ``Int64``, times
``WireTime`` (any offset, but its UTC instant within ``MIN_TIME..MAX_TIME``),
stored text has no NUL and a length limit, and the free-form ``record`` and
``tables`` of an envelope are ``JsonDoc``: bounded depth, finite numbers,
64-bit integers, NUL-free bounded strings. A value a database would refuse is
refused here, at the edge, with the field's name -- never centrally, where it
would fail a whole batch.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import sys
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    WithJsonSchema,
    model_serializer,
    model_validator,
)

from outpost.forms import FormDefinition
from outpost.wire.topics import GATEWAY_ID_PATTERN

# --- bounds every supported database holds ------------------------------------

INT32_MAX = 2**31 - 1  # PostgreSQL INTEGER
INT64_MAX = 2**63 - 1  # PostgreSQL BIGINT, SQLite INTEGER
MAX_SEQ = 1_000_000  # envelopes per activity check-out
# A day inside Python's datetime range (years 1..9999) on both sides, so a
# conversion to UTC or a day's arithmetic never overflows.
MIN_TIME = datetime(1, 1, 2, tzinfo=UTC)
MAX_TIME = datetime(9999, 12, 31, tzinfo=UTC)
# The documents' (OpenAPI) form of that range: local dates two days inside it,
# so any UTC offset (at most a day) lands within.
TIME_DOC_PATTERN = r"^(?!0001-01-0[12]|9999-12-3[01])"
MAX_SECONDS = 1e12  # durations (uptime, lag, age): ~31,700 years
MAX_JSON_DEPTH = 8  # nesting inside an envelope's record / a table row
MAX_JSON_TEXT = 20_000  # characters of one string inside a record (a form's text field's)
MAX_JSON_KEY = 128  # characters of one key inside a record
MAX_TABLE_ROWS = 1_000  # rows of one child table (as outpost.forms)


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("text must not contain NUL (\\u0000) characters")
    return value


# Years whose every time, at any offset (always under a day), is inside the range.
_SAFE_YEARS = range(MIN_TIME.year + 2, MAX_TIME.year - 1)


def _in_time_range(value: datetime) -> datetime:
    # The year alone settles almost every time: an aware comparison asks each
    # side's tzinfo for its offset, which cost more than the rest of the check.
    if value.year in _SAFE_YEARS:
        return value
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    # Aware times compare as UTC instants (no conversion, which could overflow).
    if not MIN_TIME <= aware <= MAX_TIME:
        raise ValueError(_TIME_RANGE)
    return value


_TIME_RANGE = (
    f"time must be between {MIN_TIME.date().isoformat()} and {MAX_TIME.date().isoformat()} in UTC"
)
_INT64_MIN = -INT64_MAX - 1


def _bounded_json(value: Any, depth: int = 0) -> Any:
    """Refuse what a database (or a JSON reader on the other side) cannot hold.

    Every envelope's record and tables pass through here, so a container's
    scalars (what JSON parses: exactly ``str``, ``int``, ``float``, ``bool``,
    ``None``) are checked in its own loop rather than by a call each; anything
    else (a nested container, another type) by :func:`_bounded_value`.
    """
    if type(value) is dict:
        if depth >= MAX_JSON_DEPTH:
            raise ValueError(f"values are nested deeper than {MAX_JSON_DEPTH} levels")
        for key, item in value.items():
            if type(key) is str:
                if len(key) > MAX_JSON_KEY or "\x00" in key:
                    _bounded_key(key)
            else:
                _bounded_key(key)
            _bounded_item(item, depth + 1)
        return value
    if type(value) is list:
        if depth >= MAX_JSON_DEPTH:
            raise ValueError(f"values are nested deeper than {MAX_JSON_DEPTH} levels")
        for item in value:
            _bounded_item(item, depth + 1)
        return value
    return _bounded_value(value, depth)


def _bounded_item(item: Any, depth: int) -> None:
    kind = type(item)
    if kind is str:
        if len(item) > MAX_JSON_TEXT or "\x00" in item:
            _bounded_value(item, depth)
    elif kind is int:
        if not _INT64_MIN <= item <= INT64_MAX:
            _bounded_value(item, depth)
    elif kind is float:
        if not math.isfinite(item):
            _bounded_value(item, depth)
    elif kind is not bool and item is not None:
        _bounded_json(item, depth)


def _bounded_key(key: Any) -> None:
    if isinstance(key, str):
        if len(key) > MAX_JSON_KEY:
            raise ValueError(f"a name is longer than {MAX_JSON_KEY} characters")
        _no_nul(key)


def _bounded_value(value: Any, depth: int) -> Any:
    """The reference checks, for any one value (a container's items through ``_bounded_json``)."""
    if isinstance(value, str):
        if len(value) > MAX_JSON_TEXT:
            raise ValueError(f"a text value is longer than {MAX_JSON_TEXT} characters")
        _no_nul(value)
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        if not _INT64_MIN <= value <= INT64_MAX:
            raise ValueError("a whole number is outside the 64-bit range")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("a number must be finite")
    elif isinstance(value, dict | list):
        if depth >= MAX_JSON_DEPTH:
            raise ValueError(f"values are nested deeper than {MAX_JSON_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            _bounded_key(key)
            _bounded_value(item, depth + 1)
    else:
        raise ValueError(f"{type(value).__name__} is not a JSON value")
    return value


def _whole(value: Any) -> Any:
    # JSON Schema (and so OpenAPI) counts 3.0 as an integer: so do we.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_Whole = BeforeValidator(_whole)
DbInt = Annotated[int, Field(ge=0, le=INT32_MAX), _Whole]
Int64 = Annotated[int, Field(ge=0, le=INT64_MAX), _Whole]
SeqNo = Annotated[int, Field(ge=1, le=MAX_SEQ), _Whole]
FormVersion = Annotated[int, Field(ge=1, le=INT32_MAX), _Whole]
Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False)]
WireTime = Annotated[
    AwareDatetime,
    AfterValidator(_in_time_range),
    Field(json_schema_extra={"pattern": TIME_DOC_PATTERN}),
]
# Older gateways may send these without an offset (read as UTC).
LooseTime = Annotated[datetime, AfterValidator(_in_time_range)]


def _json_value_schema(depth: int) -> dict[str, Any]:
    """JSON Schema of a value nested ``depth`` levels inside a record (as ``_bounded_json``)."""
    scalars: list[dict[str, Any]] = [
        {"type": "string", "maxLength": MAX_JSON_TEXT, "pattern": "^[^\\u0000]*$"},
        {"type": "integer", "minimum": -INT64_MAX - 1, "maximum": INT64_MAX},
        {"type": "number", "minimum": -sys.float_info.max, "maximum": sys.float_info.max},
        {"type": "boolean"},
        {"type": "null"},
    ]
    if depth >= MAX_JSON_DEPTH:
        return {"anyOf": scalars}
    inner = _json_value_schema(depth + 1)
    return {
        "anyOf": [
            *scalars,
            {"type": "array", "items": inner},
            {"type": "object", "additionalProperties": inner, "propertyNames": _KEY_SCHEMA},
        ]
    }


_KEY_SCHEMA = {"maxLength": MAX_JSON_KEY, "pattern": "^[^\\u0000]*$"}


def _text(max_length: int, min_length: int = 0) -> Any:
    return (Field(min_length=min_length, max_length=max_length), AfterValidator(_no_nul))


# Stored text: bounded, no NUL (PostgreSQL's text cannot hold one).
Title = Annotated[str, *_text(300)]
DisplayName = Annotated[str, *_text(200)]
VersionText = Annotated[str, *_text(64)]
ErrorText = Annotated[str, *_text(500)]
PasswordHash = Annotated[str, *_text(512, min_length=10)]  # an argon2 encoded hash
JsonDoc = Annotated[
    dict[str, Any],
    AfterValidator(_bounded_json),
    WithJsonSchema(
        {
            "type": "object",
            "additionalProperties": _json_value_schema(1),
            "propertyNames": _KEY_SCHEMA,
        }
    ),
]
Tables = Annotated[
    dict[
        Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_no_nul)],
        Annotated[list[dict[str, Any]], Field(max_length=MAX_TABLE_ROWS)],
    ],
    Field(max_length=100),
    AfterValidator(_bounded_json),
    WithJsonSchema(
        {
            "type": "object",
            "maxProperties": 100,
            "propertyNames": {"minLength": 1, "maxLength": 64, "pattern": "^[^\\u0000]*$"},
            "additionalProperties": {
                "type": "array",
                "maxItems": MAX_TABLE_ROWS,
                "items": {
                    "type": "object",
                    "additionalProperties": _json_value_schema(3),
                    "propertyNames": _KEY_SCHEMA,
                },
            },
        }
    ),
]

# pydantic's patterns run on Rust's regex engine, where ``$`` is the end of the
# text (Python's ``re`` lets it match before a final newline: use fullmatch).
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
# The same identifiers as plain regexes, for paths and queries (use fullmatch).
SHA256_RE = re.compile(r"[0-9a-f]{64}")
ACTIVITY_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
GatewayId = Annotated[str, Field(pattern=GATEWAY_ID_PATTERN)]
Username = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
ActivityId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
TypeName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Code = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_no_nul)]
Reason = Annotated[str, Field(max_length=2000), AfterValidator(_no_nul)]

MAX_BATCH_ENVELOPES = 500
MAX_BLOB_CHUNK = 256 * 1024  # bytes of one attachment chunk on the wire (before base64)
MAX_BLOB_BYTES = 1024 * 1024 * 1024  # the largest attachment the contract can carry


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- envelopes -------------------------------------------------------------


class EnvelopeBody(Strict):
    """An envelope as a device posts it to the gateway (the author is not in it)."""

    envelope_id: UUID
    activity_id: ActivityId
    seq: SeqNo
    base_version: DbInt
    status: Literal["draft", "completed"]
    created_at: WireTime
    record: JsonDoc
    tables: Tables = Field(default_factory=dict)
    attachments: list[Sha256] = Field(default_factory=list, max_length=100)
    form_version: FormVersion | None = None


class WireEnvelope(Strict):
    """An envelope as it travels to central: the body plus who, where and when."""

    envelope_id: UUID
    activity_id: ActivityId
    seq: SeqNo
    base_version: DbInt
    status: Literal["draft", "completed"]
    created_at: WireTime  # the device's clock
    received_at: WireTime  # the gateway's clock
    author: Username
    form_version: FormVersion
    record: JsonDoc
    tables: Tables
    attachments: list[Sha256] = Field(max_length=100)


class EnvelopeBatch(Strict):
    kind: Literal["envelope_batch"] = "envelope_batch"
    gateway_id: GatewayId
    batch_id: UUID
    sent_at: WireTime
    envelopes: list[WireEnvelope] = Field(min_length=1, max_length=MAX_BATCH_ENVELOPES)


class EnvelopeResult(Strict):
    """Central's application-level answer for one envelope."""

    envelope_id: UUID
    activity_id: ActivityId
    outcome: Literal["applied", "rejected"]
    code: Code | None = None  # set when rejected
    reason: Reason | None = None
    applied_at: WireTime  # central's clock: when the outcome was decided
    activity_version: DbInt | None = None
    checked_in: bool = False  # the activity went back online (completed applied)


class EnvelopeResults(Strict):
    kind: Literal["envelope_results"] = "envelope_results"
    gateway_id: GatewayId
    batch_id: UUID | None = None
    results: list[EnvelopeResult] = Field(min_length=1, max_length=MAX_BATCH_ENVELOPES)


class BatchDeferred(Strict):
    """Central is too busy to take this batch now: send it again after ``retry_after_s``.

    Nothing of the batch was applied. The gateway holds its uplink for about
    that long (with jitter, so a fleet does not come back at once) instead
    of waiting out its ack timeout. An older gateway that does not know
    this kind ignores it and resends after its ack timeout, as before.
    """

    kind: Literal["batch_deferred"] = "batch_deferred"
    gateway_id: GatewayId
    batch_id: UUID
    retry_after_s: float = Field(gt=0, le=3600)


# --- activities, users, check-out ------------------------------------------


class ActivityWire(Strict):
    """An activity as central sends it down: enough to render and validate it."""

    id: ActivityId
    title: Title
    type: TypeName
    form: FormDefinition
    form_version: FormVersion
    responsible: Username
    version: DbInt


class ReviewNote(Strict):
    """Why central sends a completed activity back to the field: a reviewer's note.

    ``round`` counts the activity's rounds of field work (2 is the first one
    sent back). ``after_seq`` is the highest seq central has seen from this
    gateway for the activity: the crew's next envelope is ``after_seq + 1`` (or
    later), even if the gateway no longer holds the earlier ones.
    """

    round: int = Field(ge=2, le=1_000_000)
    note: Annotated[Reason, Field(min_length=1)]
    reviewer: DisplayName  # who sent it back, as crews read it
    reviewed_at: WireTime
    after_seq: int = Field(ge=0, le=1_000_000)


class Dispatch(Strict):
    """An activity checked out to a gateway; with ``review``, one sent back with a note.

    ``review`` is left out of the encoded message when absent, so a gateway
    older than it (0.2 and before, which refuse unknown fields) still takes
    ordinary dispatches. Central sends a ``review`` only to gateways whose
    reported version understands it (:data:`REVIEW_SINCE`).
    """

    kind: Literal["dispatch"] = "dispatch"
    gateway_id: GatewayId
    activity: ActivityWire
    holder: Username
    dispatched_at: WireTime
    review: ReviewNote | None = None

    @model_serializer(mode="wrap")
    def _without_empty_review(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict) and data.get("review") is None:
            data.pop("review", None)
        return data


# The first gateway version that understands ``Dispatch.review``.
REVIEW_SINCE = (0, 3, 0)


class Recall(Strict):
    """Central took an activity back (canceled); the gateway stops offering it."""

    kind: Literal["recall"] = "recall"
    gateway_id: GatewayId
    activity_id: ActivityId
    reason: Reason
    recalled_at: WireTime


class UserWire(Strict):
    username: Username
    password_hash: PasswordHash
    offline: bool  # may work offline
    display_name: DisplayName | None = None
    # Site lead at this gateway (granted centrally per gateway): sees the whole
    # gateway's state, not only their own work. Optional: older centrals omit it.
    site_lead: bool = False


class UserPush(Strict):
    """The complete set of users and permissions for a gateway (a snapshot)."""

    kind: Literal["users"] = "users"
    gateway_id: GatewayId
    users: list[UserWire] = Field(max_length=10_000)
    offline_types: list[TypeName] = Field(max_length=1000)
    pushed_at: WireTime


class CheckoutRequest(Strict):
    kind: Literal["checkout_request"] = "checkout_request"
    gateway_id: GatewayId
    request_id: UUID
    activity_id: ActivityId
    username: Username


class CheckoutAnswer(Strict):
    kind: Literal["checkout_answer"] = "checkout_answer"
    gateway_id: GatewayId
    request_id: UUID
    ok: bool
    code: Code | None = None
    reason: Reason | None = None
    activity: ActivityWire | None = None


# --- health ------------------------------------------------------------------


class Heartbeat(Strict):
    kind: Literal["heartbeat"] = "heartbeat"
    gateway_id: GatewayId
    sent_at: WireTime
    version: VersionText
    uptime_s: Seconds
    counts: dict[Annotated[str, Field(max_length=32)], Int64] = Field(max_length=32)
    oldest_pending_s: Seconds | None = None
    rejected: Int64
    disk_free_bytes: Int64
    db_bytes: Int64
    replica_lag_s: Seconds | None = None
    replica_error: ErrorText | None = None
    devices: Int64
    last_sync: LooseTime | None = None
    cert_expires_at: LooseTime | None = None
    # Attachments of completed activities not yet at central (absent before 0.2).
    attachments_to_upload: Int64 | None = None
    attachments_to_upload_bytes: Int64 | None = None


class GatewayState(Strict):
    """Retained on ``state``: ``online`` at connect, ``offline`` by the last will."""

    kind: Literal["state"] = "state"
    gateway_id: GatewayId
    state: Literal["online", "offline"]
    at: WireTime
    version: VersionText | None = None


# --- attachments (gateway -> central) ------------------------------------------


def _from_base64(value: Any) -> Any:
    # JSON carries text; bytes given in Python are already the raw chunk.
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("data is not valid base64") from None
    return value


ChunkBytes = Annotated[
    bytes,
    BeforeValidator(_from_base64),
    PlainSerializer(lambda b: base64.b64encode(b).decode("ascii"), return_type=str),
    Field(min_length=1, max_length=MAX_BLOB_CHUNK),
]


class BlobChunk(Strict):
    """A piece of an attachment blob, ``data`` at ``offset`` of ``size`` bytes (base64 in JSON).

    The gateway sends one chunk at a time from the length central last
    confirmed, so a cut link resumes where it stopped instead of at zero.
    """

    kind: Literal["blob_chunk"] = "blob_chunk"
    gateway_id: GatewayId
    sha256: Sha256
    size: int = Field(ge=1, le=MAX_BLOB_BYTES)
    offset: int = Field(ge=0, le=MAX_BLOB_BYTES)
    data: ChunkBytes

    @model_validator(mode="after")
    def _fits(self) -> BlobChunk:
        if self.offset + len(self.data) > self.size:
            raise ValueError("the chunk runs past the blob's size")
        return self


class BlobReceipt(Strict):
    """Central's answer to a chunk: how many bytes of the blob it holds on disk.

    ``offset`` names the chunk answered, so a gateway with several chunks in
    flight can tell the answer to its oldest from a stale one.

    ``complete``: the whole blob arrived and matched its SHA-256. ``problem``:
    central refuses this blob for good (too large, content not matching its
    hash); the gateway stops sending it and shows why.
    """

    kind: Literal["blob_receipt"] = "blob_receipt"
    gateway_id: GatewayId
    sha256: Sha256
    received: int = Field(ge=0, le=MAX_BLOB_BYTES)
    complete: bool = False
    problem: Reason | None = None
    offset: int | None = Field(default=None, ge=0, le=MAX_BLOB_BYTES)  # of the chunk this answers


Message = Annotated[
    EnvelopeBatch
    | EnvelopeResults
    | BatchDeferred
    | Dispatch
    | Recall
    | UserPush
    | CheckoutRequest
    | CheckoutAnswer
    | Heartbeat
    | GatewayState
    | BlobChunk
    | BlobReceipt,
    Field(discriminator="kind"),
]
