"""Prometheus metrics of the bridge: its pipeline counters and the fleet's figures.

One registry per bridge (so several bridges in one test process never
collide). Pipeline counters are incremented by the uplink handler as it
works; the fleet gauges are refreshed from the database at scrape time, from
the columns the fleet list filters on (:func:`cloud_bridge.fleet_query.metric_rows`,
held to :func:`cloud_bridge.fleet.gateway_view` by a test).
"""

from __future__ import annotations

import asyncio
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
        self._declare_fleet(r)

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

    def _declare_fleet(self, r: CollectorRegistry) -> None:
        """The fleet, refreshed at scrape time (:meth:`set_fleet`)."""
        self.gateways = Gauge(
            "outpost_fleet_gateways", "Gateways by derived health", ["health"], registry=r
        )
        self.health = Gauge(
            "outpost_fleet_gateway_health",
            "Derived health: 0 ok, 1 warn, 2 critical",
            _GW,
            registry=r,
        )
        self.online = Gauge(
            "outpost_fleet_gateway_online", "1 while its state is online", _GW, registry=r
        )
        self.last_heard = Gauge(
            "outpost_fleet_gateway_last_heard_age_seconds",
            "Seconds since its last heartbeat (since first seen when none was heard)",
            _GW,
            registry=r,
        )
        self.backlog = Gauge(
            "outpost_fleet_gateway_backlog",
            "Envelopes queued or sent but not yet acknowledged, as last heard",
            _GW,
            registry=r,
        )
        self.oldest_pending = Gauge(
            "outpost_fleet_gateway_oldest_pending_seconds",
            "Age of its oldest pending envelope now (a lower bound while it is silent)",
            _GW,
            registry=r,
        )
        self.disk_free = Gauge(
            "outpost_fleet_gateway_disk_free_bytes", "Free disk, as last heard", _GW, registry=r
        )
        self.replica_lag = Gauge(
            "outpost_fleet_gateway_replica_lag_seconds",
            "Replica lag, as last heard",
            _GW,
            registry=r,
        )
        self.cert_expiry = Gauge(
            "outpost_fleet_gateway_cert_expiry_timestamp_seconds",
            "When its client certificate expires (Unix time)",
            _GW,
            registry=r,
        )

    def set_fleet(self, views: list[dict[str, Any]]) -> None:
        """Replace the fleet gauges with ``views`` (loop thread; no await inside)."""
        per_gateway = (
            self.health,
            self.online,
            self.last_heard,
            self.backlog,
            self.oldest_pending,
            self.disk_free,
            self.replica_lag,
            self.cert_expiry,
        )
        for gauge in per_gateway:
            gauge.clear()
        by_health = dict.fromkeys(LEVELS, 0)
        for v in views:
            gid = v["id"]
            by_health[v["health"]] += 1
            self.health.labels(gid).set(LEVELS.index(v["health"]))
            self.online.labels(gid).set(1 if v["online"] else 0)
            self.last_heard.labels(gid).set(v["silent_s"])
            for gauge, key in (
                (self.backlog, "backlog"),
                (self.oldest_pending, "oldest_pending_now_s"),
                (self.disk_free, "disk_free_bytes"),
                (self.replica_lag, "replica_lag_s"),
            ):
                if v.get(key) is not None:
                    gauge.labels(gid).set(float(v[key]))
            expires = parse_time(v.get("cert_expires_at"))
            if expires is not None:
                self.cert_expiry.labels(gid).set(expires.timestamp())
        for level, n in by_health.items():
            self.gateways.labels(level).set(n)


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics``: the pipeline counters, and the fleet as the admin API sees it now."""
    app = request.app
    t = Thresholds.from_config(app[FLEET_KEY])
    now = utcnow()
    views = await app[RUNNER_KEY].async_tx(lambda s: metric_rows(s, t, now))
    metrics = app[METRICS_KEY]
    metrics.set_fleet(views)
    return web.Response(
        body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def async_watch_loop(lag: Histogram, every_s: float = 0.25) -> None:
    """Observe how late the event loop wakes from a short sleep, until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + every_s
        await asyncio.sleep(every_s)
        lag.observe(max(0.0, loop.time() - due))
