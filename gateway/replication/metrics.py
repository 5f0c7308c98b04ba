"""Replication's Prometheus figures, read from :meth:`Replicator.status` at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from gateway.replication.supervisor import Replicator


class ReplicationCollector:
    """A prometheus_client collector reading :meth:`Replicator.status` at scrape time.

    ``replicator`` gives the running replicator, or None (nothing to report).
    """

    def __init__(self, replicator: Callable[[], Replicator | None]) -> None:
        self._replicator = replicator

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        replicator = self._replicator()
        if replicator is None:
            return
        status = replicator.status()
        up = GaugeMetricFamily("outpost_replication_up", "1 while litestream runs")
        up.add_metric([], 1.0 if status["running"] else 0.0)
        yield up
        lag = GaugeMetricFamily(
            "outpost_replication_lag_seconds",
            "Age of the oldest change the replica does not hold yet (0: replica is current)",
        )
        if status["lag_s"] is not None:
            lag.add_metric([], float(status["lag_s"]))
        yield lag
        restarts = CounterMetricFamily(
            "outpost_replication_restarts", "litestream restarts since the gateway started"
        )
        restarts.add_metric([], float(status["restarts"]))
        yield restarts
        error = GaugeMetricFamily(
            "outpost_replication_last_error_timestamp_seconds",
            "When replication last reported an error (0: never)",
        )
        error.add_metric([], replicator.last_error_at or 0.0)
        yield error
        txid = GaugeMetricFamily("outpost_replication_replica_txid", "Newest txid on the replica")
        txid.add_metric([], float(status["replica_txid"]))
        yield txid
