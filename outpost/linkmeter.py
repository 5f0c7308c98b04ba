"""What the link can carry, measured from our own QoS 1 traffic.

The MQTT client tells the meter when it hands a message to the socket and
when the broker's PUBACK for it arrives. From that:

- ``rate``: bytes the broker acknowledged per second. Each PUBACK gives a
  delivery-rate sample: the bytes acknowledged since that message was
  handed over, divided by the longer of the send and the acknowledgement
  intervals (BBR's estimator, so that PUBACKs arriving in a bunch do not
  look like a fast link). With a queue standing in front of the link the
  sample is the link's rate; with none it is less, so the estimate is the
  largest sample of the last ``RATE_WINDOW_S`` of *busy* time (something
  unacknowledged): an idle spell does not age it, so the next photo after
  ten quiet minutes starts from the rate the last one measured instead of
  ramping up again from one chunk.
- ``rtt``: the smallest PUBACK delay of a small message on this connection
  (one that queued behind others overstates it; the minimum finds one that
  did not — the ``online`` state message at every connect is small).
- ``unacked``: bytes handed over and not yet acknowledged — what a new
  message would wait behind, at worst.

All of it runs in the event loop thread (no locks). A new connection
starts from nothing (the route may have changed with it); the last
connection's rate is kept as ``previous_rate`` for choosing the next
keepalive.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass

RATE_WINDOW_S = 10.0
MIN_RTT_S = 0.001
# MQTT fixed header, packet id and topic length, roughly: counted per message
# so that small messages are not measured as free.
PACKET_OVERHEAD = 8
# Messages up to this size measure the round trip (the state message at
# connect is one; a batch of one envelope another).
SMALL_MESSAGE = 1500


@dataclass
class _Sent:
    nbytes: int
    at: float
    acked_before: int  # self.acked when it was handed over
    acked_at: float  # when the last PUBACK before it arrived
    first_sent: float  # when the message that PUBACK was for had been sent


class LinkMeter:
    """See the module docstring."""

    def __init__(self) -> None:
        self._sent: dict[int, _Sent] = {}
        # (busy time, bytes/s) in the window, rates decreasing: the first is the window's
        # largest. A sample dominated by a later, larger one can never be the max again,
        # so it is dropped at once; the max is O(1) per PUBACK (the bridge's thousand
        # PUBACKs a second made the scan of a 10 s window most of its event loop).
        self._samples: deque[tuple[float, float]] = deque()
        self.acked = 0  # bytes acknowledged on this connection
        self.unacked = 0
        self.rtt: float | None = None
        self.previous_rate: float | None = None
        self._rate: float | None = None
        self._changed = asyncio.Event()
        self._acked_at = 0.0
        self._first_sent = 0.0
        # Samples are aged on a clock that stops while nothing is in flight.
        self._idle_total = 0.0
        self._idle_since: float | None = None

    def reset(self) -> None:
        """A new connection: forget what was in flight and measure again."""
        if self._rate is not None:
            self.previous_rate = self._rate
        self._sent.clear()
        self._samples.clear()
        self.acked = 0
        self.unacked = 0
        self.rtt = None
        self._rate = None
        self._idle_total = 0.0
        self._idle_since = None
        self._changed.set()

    @property
    def rate(self) -> float | None:
        """Bytes per second the link carries (None until a PUBACK was measured)."""
        return self._rate

    def on_send(self, mid: int, nbytes: int, now: float | None = None) -> None:
        nbytes += PACKET_OVERHEAD
        now = time.monotonic() if now is None else now
        if self.unacked == 0:
            # Idle until now: intervals start here, not at the last PUBACK.
            self._acked_at = self._first_sent = now
            if self._idle_since is not None:
                self._idle_total += max(0.0, now - self._idle_since)
                self._idle_since = None
        self._sent[mid] = _Sent(nbytes, now, self.acked, self._acked_at, self._first_sent)
        self.unacked += nbytes

    def on_ack(self, mid: int, now: float | None = None) -> None:
        sent = self._sent.pop(mid, None)
        if sent is None:
            return
        now = time.monotonic() if now is None else now
        self.unacked -= sent.nbytes
        self.acked += sent.nbytes
        elapsed = max(now - sent.at, MIN_RTT_S)
        # A small message's delay is the round trip plus any queue it waited
        # in: an upper bound that the minimum tightens. (A large one's also
        # holds its transmission, which a rate still being learnt misjudges.)
        rtt = elapsed if sent.nbytes <= SMALL_MESSAGE else None
        interval = max(sent.at - sent.first_sent, now - sent.acked_at, MIN_RTT_S)
        self._acked_at, self._first_sent = now, sent.at
        busy = now - self._idle_total
        sample = (self.acked - sent.acked_before) / interval
        while self._samples and self._samples[-1][1] <= sample:
            self._samples.pop()
        self._samples.append((busy, sample))
        while busy - self._samples[0][0] > RATE_WINDOW_S:
            self._samples.popleft()
        self._rate = self._samples[0][1]
        if rtt is not None:
            self.rtt = rtt if self.rtt is None else min(self.rtt, rtt)
        self._went_idle(now)
        self._changed.set()

    def on_lost(self, mid: int, now: float | None = None) -> None:
        sent = self._sent.pop(mid, None)
        if sent is not None:
            self.unacked -= sent.nbytes
            self._went_idle(time.monotonic() if now is None else now)
            self._changed.set()

    def _went_idle(self, now: float) -> None:
        if self.unacked <= 0 and not self._sent:
            self._idle_since = now

    async def async_changed(self, timeout: float) -> None:
        """Wait until a PUBACK (or a reset) changed the figures, or ``timeout``."""
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def drain_s(self, extra: int = 0) -> float | None:
        """Seconds until what is unacknowledged (plus ``extra`` bytes) has gone, if known."""
        if self._rate is None:
            return None
        return (self.unacked + extra) / self._rate
