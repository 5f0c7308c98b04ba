"""Message schemas of the wire contract.

Every message is a strict pydantic model: unknown or missing fields are
errors. Each carries ``kind`` (the discriminator) and ``gateway_id`` (which
the receiver checks against the topic's).
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)

from outpost.forms import FormDefinition
from outpost.wire.topics import GATEWAY_ID_PATTERN

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
GatewayId = Annotated[str, Field(pattern=GATEWAY_ID_PATTERN)]
Username = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
ActivityId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Code = Annotated[str, Field(min_length=1, max_length=64)]
Reason = Annotated[str, Field(max_length=2000)]

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
    seq: int = Field(ge=1, le=1_000_000)
    base_version: int = Field(ge=0)
    status: Literal["draft", "completed"]
    created_at: AwareDatetime
    record: dict[str, Any]
    tables: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    attachments: list[Sha256] = Field(default_factory=list, max_length=100)
    form_version: int | None = Field(default=None, ge=1)


class WireEnvelope(Strict):
    """An envelope as it travels to central: the body plus who, where and when."""

    envelope_id: UUID
    activity_id: ActivityId
    seq: int = Field(ge=1)
    base_version: int = Field(ge=0)
    status: Literal["draft", "completed"]
    created_at: AwareDatetime  # the device's clock
    received_at: AwareDatetime  # the gateway's clock
    author: Username
    form_version: int = Field(ge=1)
    record: dict[str, Any]
    tables: dict[str, list[dict[str, Any]]]
    attachments: list[Sha256]


class EnvelopeBatch(Strict):
    kind: Literal["envelope_batch"] = "envelope_batch"
    gateway_id: GatewayId
    batch_id: UUID
    sent_at: AwareDatetime
    envelopes: list[WireEnvelope] = Field(min_length=1, max_length=MAX_BATCH_ENVELOPES)


class EnvelopeResult(Strict):
    """Central's application-level answer for one envelope."""

    envelope_id: UUID
    activity_id: ActivityId
    outcome: Literal["applied", "rejected"]
    code: Code | None = None  # set when rejected
    reason: Reason | None = None
    applied_at: AwareDatetime  # central's clock: when the outcome was decided
    activity_version: int | None = None
    checked_in: bool = False  # the activity went back online (completed applied)


class EnvelopeResults(Strict):
    kind: Literal["envelope_results"] = "envelope_results"
    gateway_id: GatewayId
    batch_id: UUID | None = None
    results: list[EnvelopeResult] = Field(min_length=1, max_length=MAX_BATCH_ENVELOPES)


# --- activities, users, check-out ------------------------------------------


class ActivityWire(Strict):
    """An activity as central sends it down: enough to render and validate it."""

    id: ActivityId
    title: str = Field(max_length=300)
    type: str
    form: FormDefinition
    form_version: int = Field(ge=1)
    responsible: Username
    version: int = Field(ge=0)


class Dispatch(Strict):
    kind: Literal["dispatch"] = "dispatch"
    gateway_id: GatewayId
    activity: ActivityWire
    holder: Username
    dispatched_at: AwareDatetime


class Recall(Strict):
    """Central took an activity back (canceled); the gateway stops offering it."""

    kind: Literal["recall"] = "recall"
    gateway_id: GatewayId
    activity_id: ActivityId
    reason: Reason
    recalled_at: AwareDatetime


class UserWire(Strict):
    username: Username
    password_hash: str = Field(min_length=10, max_length=512)  # argon2 encoded hash
    offline: bool  # may work offline
    display_name: str | None = Field(default=None, max_length=200)


class UserPush(Strict):
    """The complete set of users and permissions for a gateway (a snapshot)."""

    kind: Literal["users"] = "users"
    gateway_id: GatewayId
    users: list[UserWire] = Field(max_length=10_000)
    offline_types: list[str] = Field(max_length=1000)
    pushed_at: AwareDatetime


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
    sent_at: AwareDatetime
    version: str = Field(max_length=64)
    uptime_s: float = Field(ge=0)
    counts: dict[str, int]
    oldest_pending_s: float | None = None
    rejected: int = Field(ge=0)
    disk_free_bytes: int = Field(ge=0)
    db_bytes: int = Field(ge=0)
    replica_lag_s: float | None = None
    replica_error: str | None = Field(default=None, max_length=500)
    devices: int = Field(ge=0)
    last_sync: datetime | None = None
    cert_expires_at: datetime | None = None
    # Attachments of completed activities not yet at central (absent before 0.2).
    attachments_to_upload: int | None = Field(default=None, ge=0)
    attachments_to_upload_bytes: int | None = Field(default=None, ge=0)


class GatewayState(Strict):
    """Retained on ``state``: ``online`` at connect, ``offline`` by the last will."""

    kind: Literal["state"] = "state"
    gateway_id: GatewayId
    state: Literal["online", "offline"]
    at: AwareDatetime
    version: str | None = Field(default=None, max_length=64)


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
    offset: int = Field(ge=0)
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
    received: int = Field(ge=0)
    complete: bool = False
    problem: Reason | None = None
    offset: int | None = Field(default=None, ge=0)  # of the chunk this answers


Message = Annotated[
    EnvelopeBatch
    | EnvelopeResults
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
