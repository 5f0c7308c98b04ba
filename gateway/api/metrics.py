"""Prometheus metrics of one gateway app (its own registry, so apps never collide)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "outpost_http_requests",
            "LAN API requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "outpost_http_request_seconds",
            "LAN API request latency",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.envelopes_stored = Counter(
            "outpost_envelopes_stored",
            "Envelopes committed from devices",
            ["status"],
            registry=self.registry,
        )
        self.signin_failures = Counter(
            "outpost_signin_failures", "Failed sign-ins", registry=self.registry
        )
        self.envelopes = Gauge(
            "outpost_envelopes",
            "Envelopes on the gateway by state",
            ["state"],
            registry=self.registry,
        )
        self.oldest_pending = Gauge(
            "outpost_oldest_pending_seconds",
            "Age of the oldest envelope waiting to be sent or acknowledged",
            registry=self.registry,
        )
        self.disk_free = Gauge(
            "outpost_disk_free_bytes", "Free bytes in the data directory", registry=self.registry
        )
        self.disk_low = Gauge(
            "outpost_disk_low", "1 while below the free-space floor", registry=self.registry
        )
        self.backhaul_up = Gauge(
            "outpost_backhaul_up", "1 while the link to central is up", registry=self.registry
        )
        self.store_batches = Gauge(
            "outpost_store_commits", "Group commits since start", registry=self.registry
        )
        self.store_items = Gauge(
            "outpost_store_items", "Writes committed since start", registry=self.registry
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request and its latency (label children cached: this runs per request)."""
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class BackhaulCollector:
    """Link figures read from ``Backhaul.status()`` at scrape time (safe in the loop).

    ``outpost_backhaul_sent_bytes_total`` / ``…_envelopes_total`` count since the
    process started; ``outpost_backhaul_last_sync_timestamp_seconds`` is absent until
    central first answered; ``outpost_certificate_expiry_timestamp_seconds`` only with TLS.
    """

    def __init__(self, backhaul: Any) -> None:
        self._backhaul = backhaul

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        status = self._backhaul.status()
        sent = CounterMetricFamily(
            "outpost_backhaul_sent_bytes", "Compressed bytes published to central since start"
        )
        sent.add_metric([], float(status.get("bytes_sent") or 0))
        yield sent
        envelopes = CounterMetricFamily(
            "outpost_backhaul_sent_envelopes", "Envelopes published to central since start"
        )
        envelopes.add_metric([], float(status.get("envelopes_sent") or 0))
        yield envelopes
        inflight = GaugeMetricFamily(
            "outpost_backhaul_inflight_batches", "Batches waiting for central's answer"
        )
        inflight.add_metric([], float(status.get("in_flight_batches") or 0))
        yield inflight
        for key, name, doc in (
            (
                "last_sync",
                "outpost_backhaul_last_sync_timestamp_seconds",
                "When central last answered (Unix time)",
            ),
            (
                "certificate_expires_at",
                "outpost_certificate_expiry_timestamp_seconds",
                "When the gateway's client certificate expires (Unix time)",
            ),
        ):
            family = GaugeMetricFamily(name, doc)
            value = status.get(key)
            if value:
                family.add_metric([], datetime.fromisoformat(str(value)).timestamp())
            yield family
