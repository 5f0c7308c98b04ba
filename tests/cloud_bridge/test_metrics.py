"""``GET /metrics``' fleet series, built for each scrape from the fleet's rows."""

from __future__ import annotations

from typing import Any

from cloud_bridge.metrics import BridgeMetrics, render


def view(gid: str, health: str = "ok", **figures: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": gid,
        "health": health,
        "online": True,
        "silent_s": 12.0,
        "backlog": None,
        "oldest_pending_now_s": None,
        "disk_free_bytes": None,
        "replica_lag_s": None,
        "cert_expires_at": None,
    }
    return base | figures


def series(text: bytes) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_each_gateway_has_its_figures_and_an_unknown_figure_no_series() -> None:
    metrics = BridgeMetrics()
    got = series(
        render(
            metrics,
            [
                view("site-a", "critical", online=False, backlog=3, disk_free_bytes=10**9),
                view("site-b", cert_expires_at="2027-01-01T00:00:00+00:00", replica_lag_s=4.5),
            ],
        )
    )
    assert got['outpost_fleet_gateway_health{gateway="site-a"}'] == 2
    assert got['outpost_fleet_gateway_online{gateway="site-a"}'] == 0
    assert got['outpost_fleet_gateway_backlog{gateway="site-a"}'] == 3
    assert got['outpost_fleet_gateway_disk_free_bytes{gateway="site-a"}'] == 10**9
    assert got['outpost_fleet_gateway_last_heard_age_seconds{gateway="site-b"}'] == 12
    assert got['outpost_fleet_gateway_replica_lag_seconds{gateway="site-b"}'] == 4.5
    assert got['outpost_fleet_gateway_cert_expiry_timestamp_seconds{gateway="site-b"}'] == (
        1798761600
    )
    # a figure not heard is no series (not a zero that looks like a value)
    assert 'outpost_fleet_gateway_backlog{gateway="site-b"}' not in got
    assert 'outpost_fleet_gateway_cert_expiry_timestamp_seconds{gateway="site-a"}' not in got
    assert got['outpost_fleet_gateways{health="critical"}'] == 1
    assert got['outpost_fleet_gateways{health="ok"}'] == 1
    assert got['outpost_fleet_gateways{health="warn"}'] == 0
    # the pipeline's own counters are in the same answer
    assert "outpost_bridge_batches_total" in got


def test_a_gateway_gone_since_the_last_scrape_is_gone_from_the_next() -> None:
    metrics = BridgeMetrics()
    render(metrics, [view("site-a"), view("site-b", "warn")])
    got = series(render(metrics, [view("site-b", "warn")]))
    assert not [k for k in got if 'gateway="site-a"' in k]
    assert got['outpost_fleet_gateway_health{gateway="site-b"}'] == 1
    assert got['outpost_fleet_gateways{health="ok"}'] == 0
    assert got['outpost_fleet_gateways{health="warn"}'] == 1
