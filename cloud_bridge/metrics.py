"""Prometheus metrics of the bridge: its pipeline counters and the fleet's figures.

One registry per bridge (so several bridges in one test process never
collide). Pipeline counters are incremented by the uplink handler as it
works; the fleet gauges are built from the database at each scrape, from
the columns the fleet list filters on (:func:`cloud_bridge.fleet_query.metric_rows`,
held to :func:`cloud_bridge.fleet.gateway_view` by a test), and rendered off
the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from cloud_bridge.app_keys import FLEET_KEY, METRICS_KEY, RUNNER_KEY
from cloud_bridge.fleet import LEVELS, Thresholds, parse_time
from cloud_bridge.fleet_query import metric_rows
from cloud_bridge.models import utcnow

_GW = ["gateway"]


class BridgeMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.batches = Counter("outpost_bridge_batches", "Envelope batches replayed", registry=r)
        self.envelopes = Counter(
            "outpost_bridge_envelope_results",
            "Envelope results central sent back, by outcome (applied, rejected)",
            ["outcome"],
            registry=r,
        )
        # The children a fleet's every batch touches, looked up once (labels() takes a
        # lock and builds a key each call).
        self.applied_envelopes = self.envelopes.labels("applied")
        self.rejected_envelopes = self.envelopes.labels("rejected")
        self.dropped = Counter(
            "outpost_bridge_dropped_messages",
            "Uplink messages dropped: undecodable, on a wrong topic or naming another gateway",
            ["problem"],
            registry=r,
        )
        self.heartbeats = Counter(
            "outpost_bridge_heartbeats", "Gateway heartbeats recorded", registry=r
        )
        self.state_messages = Counter(
            "outpost_bridge_state_messages",
            "Gateway state messages (online, offline: last will or shutdown)",
            ["state"],
            registry=r,
        )
        self.checkouts = Counter(
            "outpost_bridge_checkout_requests", "Check-out requests answered", registry=r
        )
        self.blob_bytes = Counter(
            "outpost_bridge_blob_bytes",
            "Attachment bytes written to disk (duplicates and stale chunks not counted)",
            registry=r,
        )
        self.blobs = Counter(
            "outpost_bridge_blobs", "Attachments completed and verified", registry=r
        )
        self.blobs_refused = Counter(
            "outpost_bridge_blobs_refused",
            "Attachments refused for good, by problem (too_large, hash_mismatch)",
            ["problem"],
            registry=r,
        )
        self._declare_replay(r)

    def _declare_replay(self, r: CollectorRegistry) -> None:
        """Replay (the commit groups and the time batches wait for them), the event loop and
        the downlink: does admin work wait behind the uplink?"""
        self.replay_wait = Histogram(
            "outpost_bridge_replay_queue_delay_seconds",
            "From a batch's arrival at the bridge to the start of the transaction applying it",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.commit_seconds = Histogram(
            "outpost_bridge_replay_commit_seconds",
            "Time to apply and commit one commit group",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.commit_groups = Histogram(
            "outpost_bridge_replay_group_batches",
            "Batches applied together in one commit group",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.heartbeat_groups = Histogram(
            "outpost_bridge_heartbeat_group_size",
            "Heartbeats recorded together in one transaction",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.replay_queue = Gauge(
            "outpost_bridge_replay_queued_envelopes",
            "Envelopes in batches waiting for a commit group",
            registry=r,
        )
        self.replay_busy = Counter(
            "outpost_bridge_replay_busy",
            "Batches answered 'busy, retry later' because the replay queue was full",
            registry=r,
        )
        self.loop_lag = Histogram(
            "outpost_bridge_loop_lag_seconds",
            "How late the event loop ran a timer (sampled 4 times a second): what any "
            "admin request or MQTT answer waits for the loop before it starts",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.publish_seconds = Histogram(
            "outpost_bridge_publish_seconds",
            "From handing a message down to the broker's PUBACK, by topic leaf",
            ["leaf"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self._publish_by_leaf: dict[str, Histogram] = {}

    def publish_took(self, leaf: str) -> Histogram:
        """The ``publish_seconds`` child of one topic leaf (looked up once per leaf)."""
        child = self._publish_by_leaf.get(leaf)
        if child is None:
            child = self._publish_by_leaf[leaf] = self.publish_seconds.labels(leaf)
        return child


# Each gateway's series: (name, help, its value from a metric_rows view or None).
_PER_GATEWAY: tuple[tuple[str, str, Callable[[dict[str, Any]], float | None]], ...] = (
    (
        "outpost_fleet_gateway_health",
        "Derived health: 0 ok, 1 warn, 2 critical",
        lambda v: LEVELS.index(v["health"]),
    ),
    (
        "outpost_fleet_gateway_online",
        "1 while its state is online",
        lambda v: 1 if v["online"] else 0,
    ),
    (
        "outpost_fleet_gateway_last_heard_age_seconds",
        "Seconds since its last heartbeat (since first seen when none was heard)",
        lambda v: v["silent_s"],
    ),
    (
        "outpost_fleet_gateway_backlog",
        "Envelopes queued or sent but not yet acknowledged, as last heard",
        lambda v: v.get("backlog"),
    ),
    (
        "outpost_fleet_gateway_oldest_pending_seconds",
        "Age of its oldest pending envelope now (a lower bound while it is silent)",
        lambda v: v.get("oldest_pending_now_s"),
    ),
    (
        "outpost_fleet_gateway_disk_free_bytes",
        "Free disk, as last heard",
        lambda v: v.get("disk_free_bytes"),
    ),
    (
        "outpost_fleet_gateway_replica_lag_seconds",
        "Replica lag, as last heard",
        lambda v: v.get("replica_lag_s"),
    ),
    (
        "outpost_fleet_gateway_cert_expiry_timestamp_seconds",
        "When its client certificate expires (Unix time)",
        lambda v: _timestamp(v.get("cert_expires_at")),
    ),
)


def _timestamp(value: Any) -> float | None:
    expires = parse_time(value)
    return None if expires is None else expires.timestamp()


class _Scrape:
    """One scrape: the bridge's registry, then the fleet's series from ``views``.

    The fleet's series are families built for this scrape alone: as labelled
    gauges, clearing and setting 8 children per gateway and rendering them on
    the event loop took 1.1-1.4 s a scrape at 10,000 gateways, holding every
    gateway's answer and admin call behind it.
    """

    def __init__(self, registry: CollectorRegistry, views: list[dict[str, Any]]) -> None:
        self.registry = registry
        self.views = views

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
        by_health = dict.fromkeys(LEVELS, 0)
        for v in self.views:
            by_health[v["health"]] += 1
        gateways = GaugeMetricFamily(
            "outpost_fleet_gateways", "Gateways by derived health", labels=["health"]
        )
        for level, n in by_health.items():
            gateways.add_metric([level], n)
        yield gateways
        for name, doc, value_of in _PER_GATEWAY:
            family = GaugeMetricFamily(name, doc, labels=_GW)
            for v in self.views:
                value = value_of(v)
                if value is not None:
                    family.add_metric([v["id"]], float(value))
            yield family


def render(metrics: BridgeMetrics, views: list[dict[str, Any]]) -> bytes:
    """The text of ``GET /metrics`` for the fleet's ``views`` (blocking: a worker thread's)."""
    return generate_latest(_Scrape(metrics.registry, views))


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics``: the pipeline counters, and the fleet as the admin API sees it now."""
    app = request.app
    t = Thresholds.from_config(app[FLEET_KEY])
    now = utcnow()
    views = await app[RUNNER_KEY].async_tx(lambda s: metric_rows(s, t, now))
    # Rendered in a thread: tens of thousands of series must not hold the event loop that
    # every gateway's answers share.
    body = await asyncio.to_thread(render, app[METRICS_KEY], views)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def async_watch_loop(lag: Histogram, every_s: float = 0.25) -> None:
    """Observe how late the event loop wakes from a short sleep, until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + every_s
        await asyncio.sleep(every_s)
        lag.observe(max(0.0, loop.time() - due))
