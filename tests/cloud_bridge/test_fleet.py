"""The fleet's derived health (pure rules), its history, and the admin API over it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cloud_bridge import fleet
from cloud_bridge.config import BridgeConfig, FleetSection
from cloud_bridge.db import Database
from cloud_bridge.fleet import Facts, Thresholds, assess
from cloud_bridge.handler import record_heartbeat, record_state
from cloud_bridge.models import GatewayHistory
from cloud_bridge.service import Bridge
from outpost.wire import topics
from outpost.wire.schemas import GatewayState, Heartbeat
from tests.cloud_bridge.conftest import TOKEN, FakeGateway, bridge_config
from tests.support.broker import Broker

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
T = Thresholds()
GB = 1024**3


def heartbeat(**over: Any) -> dict[str, Any]:
    hb: dict[str, Any] = {
        "counts": {"stored": 1, "queued": 2, "sent": 1, "applied": 40, "rejected": 1},
        "oldest_pending_s": 30.0,
        "rejected": 1,
        "disk_free_bytes": 20 * GB,
        "db_bytes": 10**6,
        "replica_lag_s": 0.5,
        "replica_error": None,
        "devices": 2,
        "last_sync": "2026-11-23T11:59:00Z",
        "cert_expires_at": "2027-11-23T00:00:00Z",
        "version": "0.1.0",
        "uptime_s": 3600,
    }
    hb.update(over)
    return hb


def facts(heard_s_ago: float | None = 10, state: str = "online", **hb: Any) -> Facts:
    return Facts(
        first_seen=NOW - timedelta(days=3),
        state=state,
        state_at=NOW - timedelta(days=1),
        heartbeat_at=None if heard_s_ago is None else NOW - timedelta(seconds=heard_s_ago),
        heartbeat=heartbeat(**hb) if heard_s_ago is not None else {},
    )


def codes(f: Facts, t: Thresholds = T) -> dict[str, str]:
    return {r.code: r.level for r in assess(f, NOW, t).reasons}


def test_a_talking_gateway_within_thresholds_is_ok() -> None:
    health = assess(facts(), NOW, T)
    assert health.level == "ok" and health.reasons == ()


@pytest.mark.parametrize(
    ("silent", "level"),
    [(T.silent_warn_s - 1, None), (T.silent_warn_s, "warn"), (T.silent_critical_s, "critical")],
)
def test_silence_is_never_healthy(silent: float, level: str | None) -> None:
    got = codes(facts(heard_s_ago=silent))
    assert got.get("silent") == level
    if level:
        assert assess(facts(heard_s_ago=silent), NOW, T).level == level


def test_never_heard_warns_then_goes_critical() -> None:
    new = Facts(first_seen=NOW - timedelta(seconds=5))
    assert codes(new) == {"never_heard": "warn"}
    old = Facts(first_seen=NOW - timedelta(hours=1))
    assert codes(old) == {"never_heard": "critical"}


def test_offline_is_critical_with_its_time() -> None:
    h = assess(facts(state="offline"), NOW, T)
    assert h.level == "critical"
    assert h.reasons[0].code == "offline" and "for 1 d" in h.reasons[0].message


def test_backlog_age_counts_the_silence_as_a_lower_bound() -> None:
    # heard 20 min old an hour ago, offline since: at least 1 h 20 min now
    f = facts(heard_s_ago=3600, state="offline", oldest_pending_s=1200)
    pending, bound = fleet.oldest_pending_now(f, NOW)
    assert (pending, bound) == (4800, True)
    r = {x.code: x for x in assess(f, NOW, T).reasons}["backlog_old"]
    assert r.level == "warn" and "at least 1 h 20 min" in r.message and "3 envelopes" in r.message
    # while it talks, the heard age is the age
    assert fleet.oldest_pending_now(facts(oldest_pending_s=1200), NOW) == (1200, False)
    assert codes(facts(oldest_pending_s=T.backlog_critical_s))["backlog_old"] == "critical"
    assert "backlog_old" not in codes(facts(oldest_pending_s=None))


@pytest.mark.parametrize(
    ("free", "level"), [(2 * GB, None), (1 * GB, "warn"), (200 * 1024**2, "critical")]
)
def test_disk_low(free: int, level: str | None) -> None:
    assert codes(facts(disk_free_bytes=free)).get("disk_low") == level


def test_replica_lagging_and_erroring() -> None:
    assert codes(facts(replica_lag_s=61)) == {"replica_lagging": "warn"}
    assert codes(facts(replica_lag_s=901)) == {"replica_lagging": "critical"}
    assert codes(facts(replica_lag_s=None)) == {}  # replication off: nothing to judge
    got = assess(facts(replica_error="replica directory is read-only"), NOW, T)
    assert got.level == "warn" and "read-only" in got.reasons[0].message


def test_certificate_expiring_and_expired() -> None:
    soon = (NOW + timedelta(days=20)).isoformat()
    assert codes(facts(cert_expires_at=soon)) == {"cert_expiring": "warn"}
    sooner = (NOW + timedelta(days=3)).isoformat()
    assert codes(facts(cert_expires_at=sooner)) == {"cert_expiring": "critical"}
    gone = (NOW - timedelta(hours=2)).isoformat()
    r = assess(facts(cert_expires_at=gone), NOW, T).reasons[0]
    assert (r.code, r.level) == ("cert_expired", "critical") and "2 h ago" in r.message
    assert codes(facts(cert_expires_at=None)) == {}  # no TLS


def test_thresholds_come_from_config_and_reasons_sort_worst_first() -> None:
    t = Thresholds.from_config(FleetSection(disk_warn_mb=30 * 1024, silent_warn_s=5))
    h = assess(facts(heard_s_ago=6, state="offline"), NOW, t)
    assert [(r.code, r.level) for r in h.reasons] == [
        ("offline", "critical"),
        ("silent", "warn"),
        ("disk_low", "warn"),
    ]


def test_a_recent_dropped_message_warns_an_old_one_does_not() -> None:
    base = facts()
    recent = Facts(**{**base.__dict__, "last_error": "undecodable", "last_error_at": NOW})
    assert codes(recent) == {"dropped_message": "warn"}
    old_at = NOW - timedelta(seconds=T.error_warn_s + 1)
    old = Facts(**{**base.__dict__, "last_error": "undecodable", "last_error_at": old_at})
    assert codes(old) == {}


def test_every_figure_says_when_it_was_heard() -> None:
    f = facts(heard_s_ago=125)
    figs = fleet.figures(f, NOW)
    assert figs["backlog"] == {"value": 3, "heard_at": "2026-11-23T11:57:55Z", "age_s": 125.0}
    assert figs["disk_free_bytes"]["age_s"] == 125.0
    assert figs["state"]["heard_at"] == "2026-11-22T12:00:00Z"
    assert fleet.figures(Facts(first_seen=NOW), NOW)["backlog"]["heard_at"] is None


def test_durations_read_naturally() -> None:
    assert [fleet.duration(s) for s in (5, 89, 600, 3600, 3660 * 3, 86400 * 2 + 3600 * 4)] == [
        "5 s",
        "89 s",
        "10 min",
        "1 h",
        "3 h 3 min",
        "2 d 4 h",
    ]


# --- bookkeeping in the database ------------------------------------------------------


def hb_message(gateway_id: str = "site-a", **over: Any) -> Heartbeat:
    data = heartbeat(**over)
    data.pop("version")
    return Heartbeat(gateway_id=gateway_id, sent_at=datetime.now(UTC), version="0.1.0", **data)


def test_history_keeps_heartbeats_and_state_changes_and_prunes(db: Database) -> None:
    with db.session() as s:
        record_heartbeat(s, hb_message())  # implies online
        record_heartbeat(s, hb_message(devices=5))  # the row has it; the history, one in 5 min
        record_state(s, GatewayState(gateway_id="site-a", state="online", at=NOW))  # no change
        record_state(s, GatewayState(gateway_id="site-a", state="offline", at=NOW))
    with db.session() as s:
        kinds = [h.kind for h in reversed(fleet.recent_history(s, "site-a"))]
        assert kinds == ["online", "heartbeat", "offline"]
        view = fleet.all_views(s, T)[0]
        assert view["devices"] == 5 and view["state"] == "offline" and view["health"] == "critical"
        old = datetime.now(UTC) - timedelta(days=8)
        s.add(GatewayHistory(gateway_id="site-a", kind="heartbeat", at=old, data={}))
    with db.session() as s:
        gone = fleet.prune_history(s, datetime.now(UTC) - timedelta(days=7))
    assert gone == 1
    with db.session() as s:
        assert len(fleet.recent_history(s, "site-a")) == 3


# --- through the admin API ----------------------------------------------------------------


@pytest.fixture
async def strict_bridge(
    central_db_url: str, tmp_path: Path, broker: Broker
) -> AsyncIterator[Bridge]:
    """A bridge whose disk threshold flags every heartbeat below 30 GiB free."""
    base = bridge_config(central_db_url, tmp_path / "central", broker.port)
    cfg = BridgeConfig(
        central=base.central,
        admin=base.admin,
        mqtt=base.mqtt,
        fleet=FleetSection(disk_warn_mb=30 * 1024, disk_critical_mb=5 * 1024),
    )
    b = Bridge(cfg)
    await b.async_start()
    try:
        await b.async_wait_mqtt(10)
        yield b
    finally:
        await b.async_stop()


async def _get(http: aiohttp.ClientSession, url: str, auth: bool = True) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"} if auth else {}
    async with http.get(url, headers=headers) as r:
        body = await (r.json() if r.content_type == "application/json" else r.text())
        return r.status, body


async def test_thresholds_flip_health_through_the_api(
    strict_bridge: Bridge, broker: Broker
) -> None:
    gw = await FakeGateway("site-a", broker.port).start()
    base = strict_bridge.admin_url + "/api/v1/gateways/site-a"
    try:
        async with aiohttp.ClientSession() as http:

            async def health_after(hb: Heartbeat) -> dict[str, Any]:
                await gw.publish(topics.UP_HEARTBEAT, hb)
                async with asyncio.timeout(10):
                    while True:
                        status, view = await _get(http, base)
                        if status == 200 and view["figures"]["devices"]["value"] == hb.devices:
                            return dict(view)
                        await asyncio.sleep(0.05)

            ok = await health_after(hb_message(disk_free_bytes=40 * GB, devices=1))
            assert (ok["health"], ok["reasons"], ok["online"]) == ("ok", [], True)
            low = await health_after(hb_message(disk_free_bytes=10 * GB, devices=2))
            assert low["health"] == "warn"
            assert [r["code"] for r in low["reasons"]] == ["disk_low"]
            assert "10.0 GiB" in low["reasons"][0]["message"]
            worse = await health_after(hb_message(disk_free_bytes=1 * GB, devices=3))
            assert (worse["health"], worse["reasons"][0]["level"]) == ("critical", "critical")

            # a last will carries the time its gateway connected, a day ago here
            connected_at = datetime.now(UTC) - timedelta(days=1)
            await gw.publish(
                topics.STATE, GatewayState(gateway_id="site-a", state="offline", at=connected_at)
            )
            async with asyncio.timeout(10):
                while (await _get(http, base))[1]["state"] != "offline":
                    await asyncio.sleep(0.05)
            _, off = await _get(http, base)
            assert off["online"] is False and off["reasons"][0]["code"] == "offline"
            # state_at is central's clock, not the (stale) time in the message
            state_at = fleet.parse_time(off["state_at"])
            assert state_at is not None
            assert abs((datetime.now(UTC) - state_at).total_seconds()) < 30

            status, fleet_list = await _get(http, strict_bridge.admin_url + "/api/v1/gateways")
            assert status == 200 and [g["id"] for g in fleet_list["gateways"]] == ["site-a"]
            assert fleet_list["broker_connected"] is True
            status, hist = await _get(http, base + "/history?limit=3")
            # three heartbeats within seconds: the history keeps one (fleet.HISTORY_EVERY_S)
            assert [h["kind"] for h in hist["history"]] == ["offline", "heartbeat", "online"]
            status, err = await _get(http, base + "/history?limit=0")
            assert (status, err["error"]["code"]) == (400, "invalid_limit")
            status, err = await _get(
                http, strict_bridge.admin_url + "/api/v1/gateways/nope/history"
            )
            assert status == 404

            # /metrics: the token is needed, then the fleet and the pipeline are there
            status, _ = await _get(http, strict_bridge.admin_url + "/metrics", auth=False)
            assert status == 401
            status, text = await _get(http, strict_bridge.admin_url + "/metrics")
            assert status == 200
            assert 'outpost_fleet_gateway_health{gateway="site-a"} 2.0' in text
            assert 'outpost_fleet_gateway_online{gateway="site-a"} 0.0' in text
            assert 'outpost_fleet_gateway_backlog{gateway="site-a"} 3.0' in text
            assert 'outpost_fleet_gateways{health="critical"} 1.0' in text
            assert "outpost_bridge_heartbeats_total 3.0" in text
            assert 'outpost_bridge_state_messages_total{state="offline"} 1.0' in text
    finally:
        await gw.client.async_stop()


async def test_openapi_documents_the_fleet(strict_bridge: Bridge) -> None:
    async with aiohttp.ClientSession() as http:
        _, doc = await _get(http, strict_bridge.admin_url + "/api/v1/openapi.json", auth=False)
    paths = doc["paths"]
    one = paths["/api/v1/gateways/{gateway_id}"]["get"]
    assert "health" in one["summary"]
    assert one["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Gateway"
    }
    schema = doc["components"]["schemas"]["Gateway"]
    assert {"health", "reasons", "figures", "last_seen", "online"} <= set(schema["required"])
    assert "/api/v1/gateways/{gateway_id}/history" in paths


async def test_fleet_page_is_behind_the_platform_sign_in(
    strict_bridge: Bridge, broker: Broker
) -> None:
    """The fleet pages sit on the platform's layout and sign-in (a viewer may see them)."""
    from tests.cloud_bridge.test_platform import Browser, make_user

    url = strict_bridge.admin_url
    async with aiohttp.ClientSession() as http:
        await make_user(http, url, "vera", "viewer")
    async with Browser(url) as b:
        async with b.http.get(url + "/fleet", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"].startswith("/signin?next=")
        await b.sign_in("vera")
        status, page = await b.get("/fleet")
        assert status == 200 and "0 gateways" in page and 'http-equiv="refresh"' in page
        assert "script-src" not in b.last_headers["Content-Security-Policy"]
        status, _ = await b.get("/fleet/gateways/nope")
        assert status == 404
        # the cookie opens the pages only: the API still wants a bearer token
        async with b.http.get(url + "/api/v1/gateways") as r:
            assert r.status == 401
        # central cut off from the broker: the page says every figure is old news
        broker.stop()
        async with asyncio.timeout(10):
            while strict_bridge.mqtt is not None and strict_bridge.mqtt.connected:
                await asyncio.sleep(0.05)
        _, page = await b.get("/fleet")
        assert "not connected to the MQTT broker" in page


async def test_the_bridge_prunes_old_history_when_it_starts(
    central_db_url: str, tmp_path: Path, broker: Broker
) -> None:
    from cloud_bridge.migration import migrate

    def seed_old() -> None:
        database = Database.from_url(central_db_url)
        try:
            migrate(database.engine)
            with database.session() as s:
                for days in (30, 8, 1):
                    at = datetime.now(UTC) - timedelta(days=days)
                    s.add(GatewayHistory(gateway_id="site-a", kind="heartbeat", at=at, data={}))
        finally:
            database.dispose()

    await asyncio.to_thread(seed_old)
    b = Bridge(bridge_config(central_db_url, tmp_path / "central", broker.port))
    await b.async_start()
    try:
        assert b.runner is not None
        runner = b.runner

        async def left() -> int:
            return await runner.async_tx(lambda s: len(fleet.recent_history(s, "site-a")))

        async with asyncio.timeout(10):
            while await left() != 1:  # only the day-old entry is within history_days = 7
                await asyncio.sleep(0.05)
    finally:
        await b.async_stop()


async def test_the_scheduler_prunes_history_at_start_and_every_interval(
    central_db_url: str, tmp_path: Path, broker: Broker
) -> None:
    base = bridge_config(central_db_url, tmp_path / "central", broker.port)
    cfg = BridgeConfig(
        central=base.central,
        admin=base.admin,
        mqtt=base.mqtt,
        fleet=FleetSection(history_days=7, prune_interval_s=0.3),
    )
    b = Bridge(cfg)
    await b.async_start()
    try:
        assert b.db is not None
        db = b.db

        def add_old() -> None:
            with db.session() as s:
                record_heartbeat(s, hb_message("site-prune"))
                old = datetime.now(UTC) - timedelta(days=8)
                s.add(GatewayHistory(gateway_id="site-prune", kind="heartbeat", at=old, data={}))

        def old_left() -> int:
            cutoff = datetime.now(UTC) - timedelta(days=7)
            with db.session() as s:
                return sum(1 for h in fleet.recent_history(s, "site-prune") if h.at < cutoff)

        await asyncio.to_thread(add_old)  # after the first run at start: the next one takes it
        for _ in range(100):
            if await asyncio.to_thread(old_left) == 0:
                break
            await asyncio.sleep(0.1)
        assert await asyncio.to_thread(old_left) == 0
    finally:
        await b.async_stop()
