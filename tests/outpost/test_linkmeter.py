"""The link meter's rate: the largest delivery-rate sample of the busy window, in O(1)."""

from __future__ import annotations

import random

from outpost import linkmeter
from outpost.linkmeter import LinkMeter


def test_rate_is_the_window_maximum_as_a_full_scan_finds_it() -> None:
    rng = random.Random(7)
    meter = LinkMeter()
    t, mid = 1000.0, 0
    seen: list[tuple[float, float]] = []  # (busy time, sample), for a full scan
    in_flight: list[int] = []
    for _ in range(3000):
        t += rng.choice((0.001, 0.01, 0.2, 1.5))
        if in_flight and rng.random() < 0.5:
            m = in_flight.pop(rng.randrange(len(in_flight)))
            before = meter.acked
            sent = meter._sent[m]
            meter.on_ack(m, now=t)
            busy = t - meter._idle_total
            interval = max(sent.at - sent.first_sent, t - sent.acked_at, linkmeter.MIN_RTT_S)
            seen.append((busy, (before + sent.nbytes - sent.acked_before) / interval))
            window = [s for b, s in seen if busy - b <= linkmeter.RATE_WINDOW_S]
            assert meter.rate == max(window)
        else:
            mid += 1
            meter.on_send(mid, rng.randint(50, 50_000), now=t)
            in_flight.append(mid)


def test_samples_kept_stay_few_under_a_thousand_pubacks_a_second() -> None:
    meter = LinkMeter()
    t = 0.0
    for mid in range(20_000):
        meter.on_send(mid, 400, now=t)
        t += 0.001
        meter.on_ack(mid, now=t)
    assert meter.rate is not None
    assert len(meter._samples) < 100  # a full 10 s window would be 10,000
