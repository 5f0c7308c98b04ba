"""The wire contract between gateways and central: topics, schemas, codec.

Defined once here; the gateway and the bridge both import it.
"""

from outpost.wire.codec import CODEC_VERSION, DecodeError, decode, encode
from outpost.wire.schemas import (
    ActivityWire,
    BatchDeferred,
    CheckoutAnswer,
    CheckoutRequest,
    Dispatch,
    EnvelopeBatch,
    EnvelopeResult,
    EnvelopeResults,
    GatewayState,
    Heartbeat,
    Message,
    Recall,
    UserPush,
    UserWire,
    WireEnvelope,
)

__all__ = [
    "CODEC_VERSION",
    "ActivityWire",
    "BatchDeferred",
    "CheckoutAnswer",
    "CheckoutRequest",
    "DecodeError",
    "Dispatch",
    "EnvelopeBatch",
    "EnvelopeResult",
    "EnvelopeResults",
    "GatewayState",
    "Heartbeat",
    "Message",
    "Recall",
    "UserPush",
    "UserWire",
    "WireEnvelope",
    "decode",
    "encode",
]
