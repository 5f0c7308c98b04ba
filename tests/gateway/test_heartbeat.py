"""The heartbeat carries every figure, and each equals what GET /api/v1/status says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.api.keys import BACKHAUL_KEY, STARTED_KEY, STORE_KEY
from gateway.heartbeat import HeartbeatSource, replica_error
from tests.gateway.conftest import envelope_body, sign_in


async def _status(client: TestClient[Any, Any], auth: dict[str, str]) -> dict[str, Any]:
    resp = await client.get("/api/v1/status", headers=auth)
    assert resp.status == 200
    return dict(await resp.json())


async def test_heartbeat_figures_equal_the_status_page(client: TestClient[Any, Any]) -> None:
    app = client.server.app
    alice = await sign_in(client, "alice")
    await sign_in(client, "bob")  # same address: one device (devices are remote addresses)
    for body in (
        envelope_body("act-1", 1),
        envelope_body("act-1", 2, "completed"),
        envelope_body("act-2", 1, "completed"),
    ):
        resp = await client.post("/api/v1/envelopes", json=body, headers=alice)
        assert resp.status == 201, await resp.text()
    expires = datetime.now(UTC) + timedelta(days=90)
    source = HeartbeatSource(
        "site-test",
        app[STORE_KEY],
        app[STORE_KEY].path.parent,
        cert_expiry=expires,
        link=app[BACKHAUL_KEY].status,
        started=app[STARTED_KEY],
    )

    before = await _status(client, alice)
    beat = await source()
    after = await _status(client, alice)

    assert beat.gateway_id == "site-test"
    assert beat.version == before["gateway"]["version"]
    assert before["gateway"]["uptime_s"] <= beat.uptime_s <= after["gateway"]["uptime_s"]
    assert beat.counts == before["envelopes"] == after["envelopes"]
    assert beat.counts["queued"] == 3  # the link is down
    assert beat.rejected == before["envelopes"]["rejected"]
    assert beat.oldest_pending_s is not None
    assert before["oldest_pending_s"] <= beat.oldest_pending_s <= after["oldest_pending_s"]
    assert beat.db_bytes == before["disk"]["db_bytes"] == after["disk"]["db_bytes"] > 0
    # the status page caches free space for a second; a busy disk moves meanwhile
    assert abs(beat.disk_free_bytes - before["disk"]["free_bytes"]) < 64 * 1024**2
    assert beat.last_sync is None and before["last_sync"] is None
    assert beat.replica_lag_s is None and before["replication"] == {"enabled": False}
    assert beat.replica_error is None
    assert beat.devices == before["devices"] == 1
    assert beat.cert_expires_at == expires


def test_replica_error_is_reported_only_while_it_matters() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    base = {"enabled": True, "state": "running", "last_error": "litestream exited 1"}
    recent = {**base, "last_error_at": "2026-11-23T11:55:00Z"}
    old = {**base, "last_error_at": "2026-11-23T10:00:00Z"}
    assert replica_error(recent, now) == "litestream exited 1"
    assert replica_error(old, now) is None  # recovered long ago
    assert replica_error({**old, "state": "restarting"}, now) == "litestream exited 1"
    assert replica_error({"enabled": False}, now) is None
