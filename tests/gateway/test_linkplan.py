"""The link meter's estimates and the sizes the uplink takes from them."""

from __future__ import annotations

from gateway import linkplan
from gateway.config import GatewayMqttSection
from outpost.linkmeter import PACKET_OVERHEAD, LinkMeter

CFG = GatewayMqttSection()


def feed_link(meter: LinkMeter, rate: float, rtt: float, nbytes: int, count: int) -> None:
    """Messages queued back to back on a link of ``rate`` bytes/s and ``rtt`` seconds."""
    meter.on_send(0, 100, now=0.0)  # the small state message at connect
    meter.on_ack(0, now=rtt + 100 / rate)
    t0 = 10.0
    for i in range(1, count + 1):
        meter.on_send(i, nbytes, now=t0)
    for i in range(1, count + 1):
        meter.on_ack(i, now=t0 + i * (nbytes + PACKET_OVERHEAD) / rate + rtt)


def test_the_meter_finds_the_rate_and_round_trip_of_a_busy_link() -> None:
    meter = LinkMeter()
    feed_link(meter, rate=2000, rtt=0.6, nbytes=8192, count=10)
    assert meter.rate is not None and 1800 < meter.rate < 2100
    assert meter.rtt is not None and 0.6 <= meter.rtt < 0.7
    assert meter.unacked == 0


def test_a_bunch_of_pubacks_does_not_look_like_a_fast_link() -> None:
    meter = LinkMeter()
    feed_link(meter, rate=8000, rtt=0.6, nbytes=4000, count=5)
    for i in range(10, 20):
        meter.on_send(i, 4000, now=100.0)
    for i in range(10, 20):  # all answered within 10 ms of each other, 5 s later
        meter.on_ack(i, now=105.0 + (i - 10) * 0.001)
    assert meter.rate is not None and meter.rate < 12_000


def test_sizes_fit_a_16_kbit_link() -> None:
    meter = LinkMeter()
    feed_link(meter, rate=2000, rtt=0.6, nbytes=8192, count=10)
    chunk = linkplan.chunk_bytes(meter, CFG)
    assert chunk == CFG.blob_chunk_min_bytes  # ~4 s of link: far inside the keepalive
    # Two chunks may be in flight (the pipe stays busy), not more.
    assert 2 * chunk <= linkplan.send_budget(meter, CFG) < 3 * chunk
    assert linkplan.keepalive(meter, CFG) >= 64 * 1024 / 2000
    assert linkplan.batch_max_bytes(meter, CFG, 0.2) <= 2000 * CFG.batch_s / 0.2


def test_sizes_fill_a_long_fat_pipe() -> None:
    meter = LinkMeter()
    feed_link(meter, rate=1_250_000, rtt=0.6, nbytes=128 * 1024, count=40)
    assert linkplan.chunk_bytes(meter, CFG) == CFG.blob_chunk_bytes
    # At least the bandwidth-delay product in flight, plus the queue allowance.
    assert linkplan.send_budget(meter, CFG) >= 1_250_000 * (0.6 + CFG.send_queue_s)
    assert linkplan.keepalive(meter, CFG) == CFG.keepalive


def test_unmeasured_means_careful_and_fixed_means_the_settings() -> None:
    meter = LinkMeter()
    assert linkplan.chunk_bytes(meter, CFG) == CFG.blob_chunk_min_bytes
    assert linkplan.answer_timeout(meter, CFG) == CFG.ack_timeout_s
    fixed = GatewayMqttSection(adaptive=False)
    assert linkplan.chunk_bytes(meter, fixed) == fixed.blob_chunk_bytes
    assert linkplan.batch_max_bytes(meter, fixed, None) == fixed.batch_max_bytes


def test_the_answer_timeout_grows_with_the_queue_between_floor_and_ceiling() -> None:
    meter = LinkMeter()
    feed_link(meter, rate=1200, rtt=0.6, nbytes=8192, count=3)
    for i in range(100, 110):
        meter.on_send(i, 8192, now=50.0)  # ~68 s of link time queued
    timeout = linkplan.answer_timeout(meter, CFG)
    assert CFG.ack_timeout_s < timeout <= CFG.ack_timeout_max_s


def test_an_idle_spell_does_not_age_the_rate_so_the_next_photo_starts_wide() -> None:
    meter = LinkMeter()
    feed_link(meter, rate=1_250_000, rtt=0.6, nbytes=128 * 1024, count=40)
    budget = linkplan.send_budget(meter, CFG)
    # Ten quiet minutes, then one chunk goes and is acknowledged alone (its
    # sample is one chunk per round trip: far below the link's rate).
    later = 700.0
    meter.on_send(100, 128 * 1024, now=later)
    meter.on_ack(100, now=later + 0.7)
    assert meter.rate is not None and meter.rate > 1_000_000
    assert linkplan.send_budget(meter, CFG) == budget
    # Busy time still ages it: a link that really got slower is believed
    # after RATE_WINDOW_S of traffic at the new rate.
    t, mid = later + 1.0, 200
    while t < later + 30:
        meter.on_send(mid, 8192, now=t)
        t += (8192 + PACKET_OVERHEAD) / 2000
        meter.on_ack(mid, now=t)
        mid += 1
    assert meter.rate is not None and meter.rate < 20_000
