"""Sizes for the uplink, from what the link measures (:mod:`outpost.linkmeter`).

Plain functions of the meter and the ``[mqtt]`` settings, safe in the loop:

- a chunk takes about ``chunk_s`` of link time (floor
  ``blob_chunk_min_bytes``, ceiling ``blob_chunk_bytes``), so no message
  holds the link long enough to starve the keepalive, and an envelope never
  waits behind a big one;
- attachment bytes handed to the socket and not yet acknowledged stay
  within one and a half round trips of link time or one chunk, whichever
  is more (the pipe stays full, and the rate estimate can grow when the
  link is faster than measured), plus ``send_queue_s`` of link time or one
  chunk, whichever is more: what an envelope published now may wait behind;
- an envelope batch takes about ``batch_s`` of link time;
- the keepalive of the next connection covers a 64 KiB message from
  central at the last connection's rate, between ``keepalive`` and
  ``keepalive_max``;
- the wait for central's answer is three times what is queued plus a round
  trip, between ``ack_timeout_s`` and ``ack_timeout_max_s``.

Until the first PUBACK is measured the link is taken to be slow (the
floors); the estimate grows within a few round trips.
"""

from __future__ import annotations

from gateway.config import GatewayMqttSection
from outpost.linkmeter import LinkMeter

# What central may send in one message (a dispatch with its form, the user
# snapshot): the keepalive must outlast it on the downlink.
BIG_DOWNLINK_MESSAGE = 64 * 1024
# Until measured: zlib's ratio on a lone envelope.
DEFAULT_RATIO = 0.5


def chunk_bytes(meter: LinkMeter, cfg: GatewayMqttSection) -> int:
    if not cfg.adaptive:
        return cfg.blob_chunk_bytes
    rate = meter.rate
    if rate is None:
        return cfg.blob_chunk_min_bytes
    want = int(rate * cfg.chunk_s)
    return max(cfg.blob_chunk_min_bytes, min(cfg.blob_chunk_bytes, want))


def send_budget(meter: LinkMeter, cfg: GatewayMqttSection) -> int:
    """Attachment bytes that may be unacknowledged by the broker at once."""
    if not cfg.adaptive:
        return cfg.blob_chunk_bytes * cfg.blob_window
    chunk = chunk_bytes(meter, cfg)
    rate, rtt = meter.rate, meter.rtt
    if rate is None or rtt is None:
        return int(chunk * 1.1)
    # A chunk on the wire is its bytes plus base64-under-zlib and headers (~3 %).
    return int(1.1 * (max(chunk, rate * cfg.send_queue_s) + max(chunk, rate * 1.5 * rtt)))


def batch_max_bytes(meter: LinkMeter, cfg: GatewayMqttSection, ratio: float | None) -> int:
    """Envelope JSON bytes in one batch (claimed before compression, hence ``ratio``)."""
    if not cfg.adaptive or meter.rate is None:
        # Unmeasured: one modest batch goes first and measures the link.
        return cfg.batch_max_bytes if not cfg.adaptive else min(cfg.batch_max_bytes, 16 * 1024)
    wire = meter.rate * cfg.batch_s
    return max(1024, min(cfg.batch_max_bytes, int(wire / max(ratio or DEFAULT_RATIO, 0.05))))


def keepalive(meter: LinkMeter, cfg: GatewayMqttSection) -> int:
    if not cfg.adaptive:
        return cfg.keepalive
    rate = meter.rate or meter.previous_rate
    if rate is None:
        return cfg.keepalive
    # paho pings after one keepalive without an incoming packet and gives up
    # after a second: a message that long must fit in one.
    need = int(BIG_DOWNLINK_MESSAGE / rate) + 1
    return max(cfg.keepalive, min(cfg.keepalive_max, need))


def answer_timeout(meter: LinkMeter, cfg: GatewayMqttSection, extra: int = 0) -> float:
    """How long to wait for central's answer to something just sent."""
    if not cfg.adaptive:
        return cfg.ack_timeout_s
    drain = meter.drain_s(extra)
    rtt = meter.rtt
    if drain is None or rtt is None:
        return cfg.ack_timeout_s
    return max(cfg.ack_timeout_s, min(cfg.ack_timeout_max_s, 3 * (drain + rtt)))
