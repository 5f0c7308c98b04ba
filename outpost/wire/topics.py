"""MQTT topic names, all under ``outpost/v1/gw/<gateway-id>/``.

Direction is part of the name so a broker ACL can say it in two lines:
a gateway writes ``up/#`` and ``state`` and reads ``down/#`` of its own
subtree; the bridge reads every ``up/#`` and ``state`` and writes ``down/#``.
"""

from __future__ import annotations

import re

ROOT = "outpost/v1/gw"
# A gateway id is one topic segment: no wildcards, separators or spaces.
GATEWAY_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
_GATEWAY_ID_RE = re.compile(GATEWAY_ID_PATTERN)

# uplink: gateway -> central
UP_ENVELOPES = "up/envelopes"
UP_CHECKOUT = "up/checkout"
UP_HEARTBEAT = "up/heartbeat"
UP_BLOBS = "up/blobs"  # attachment chunks
STATE = "state"  # retained: online / offline (last will)
# downlink: central -> gateway
DOWN_RESULTS = "down/results"
DOWN_DISPATCH = "down/dispatch"
DOWN_USERS = "down/users"
DOWN_CHECKOUT = "down/checkout"
DOWN_BLOBS = "down/blobs"  # receipts for attachment chunks

# MQTT 5 user property carrying the envelope ids of a batch, so central can
# dedupe before decoding.
ENVELOPE_IDS_PROPERTY = "envelope-ids"
# Shared subscription group for bridge workers.
BRIDGE_SHARE_GROUP = "outpost-bridge"


def valid_gateway_id(gateway_id: str) -> bool:
    return bool(_GATEWAY_ID_RE.fullmatch(gateway_id))


def topic(gateway_id: str, leaf: str) -> str:
    if not valid_gateway_id(gateway_id):
        raise ValueError(f"invalid gateway id {gateway_id!r}")
    return f"{ROOT}/{gateway_id}/{leaf}"


def gateway_subscriptions(gateway_id: str) -> list[str]:
    """What a gateway subscribes to: its own downlink."""
    return [topic(gateway_id, "down/#")]


def bridge_subscriptions(shared: bool = True, group: str = BRIDGE_SHARE_GROUP) -> list[str]:
    """What the bridge subscribes to: every gateway's uplink and state.

    ``group`` is the shared-subscription group; a provisioned fleet uses a
    random one (``mqtt.share_group``), since Mosquitto lets any client join a
    group and then drops the messages that member may not read.
    """
    subs = [f"{ROOT}/+/up/#", f"{ROOT}/+/{STATE}"]
    if shared:
        # State is retained and tiny; every worker may see it. Uplink is shared.
        subs[0] = f"$share/{group}/{subs[0]}"
    return subs


def parse(topic_name: str) -> tuple[str, str] | None:
    """``(gateway_id, leaf)`` of a topic under ROOT, or None if it is not ours."""
    prefix = ROOT + "/"
    if not topic_name.startswith(prefix):
        return None
    rest = topic_name[len(prefix) :]
    gateway_id, sep, leaf = rest.partition("/")
    if not sep or not valid_gateway_id(gateway_id) or not leaf:
        return None
    return gateway_id, leaf
