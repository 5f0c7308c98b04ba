"""The fleet view end to end: real ``outpost-gateway run`` and ``outpost-bridge run`` processes.

- a gateway killed with SIGKILL shows offline at central within 1.5x its keepalive;
- a hung gateway (SIGSTOP: its socket stays open, nothing is sent) too, which is
  what the broker's keepalive check (1.5x keepalive) is for;
- the figures central shows equal the gateway's own GET /api/v1/status;
- the fleet page renders in Debian's headless Chromium with no console errors
  (docs/screenshots/fleet.png with OUTPOST_WEB_SCREENSHOTS=docs/screenshots).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from outpost.mqtt import MqttClient
from outpost.mqtt_config import MqttSection
from outpost.wire import topics
from outpost.wire.codec import encode
from outpost.wire.schemas import GatewayState, Heartbeat
from tests.e2e.conftest import GW, BridgeProcess, Central, Device, wait_for
from tests.support.broker import Broker, free_port

KEEPALIVE = 5
MOSQUITTO_KEEPALIVE_TICK_S = 6  # how often Mosquitto 2.0.x looks for expired keepalives
CHROMIUM = Path("/usr/bin/chromium")
# Written only when asked (OUTPOST_WEB_SCREENSHOTS=docs/screenshots), so an
# ordinary run leaves the working tree alone.
SCREENSHOTS = Path(
    os.environ.get("OUTPOST_WEB_SCREENSHOTS") or tempfile.mkdtemp(prefix="fleet-shots-")
)


class GatewayProcess:
    """``outpost-gateway run --config`` as a child process a test can kill or freeze."""

    def __init__(self, workdir: Path, broker: Broker, gateway_id: str = GW) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.config = workdir / "gateway.toml"
        self.log = workdir / "gateway.log"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f'[gateway]\nid = "{gateway_id}"\ndata_dir = "{workdir / "data"}"\n'
            f'[lan]\nhost = "127.0.0.1"\nport = {self.port}\ndisk_free_floor_mb = 0\n'
            "signin_slowdown_s = 0\n"
            "[discovery]\nenabled = false\n"
            f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nkeepalive = {KEEPALIVE}\n'
            "heartbeat_s = 1\nbackoff_initial = 0.05\nbackoff_max = 0.5\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def async_start(self, http: aiohttp.ClientSession) -> None:
        exe = Path(sys.executable).parent / "outpost-gateway"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(exe), "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        async def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited:\n{self.log.read_text()[-3000:]}")
            try:
                async with http.get(self.url + "/healthz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(healthy, 30, "the gateway to serve")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(10)
        self.proc = None


@pytest.fixture
def gateway_process(tmp_path: Path, broker: Broker) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path / "gateway", broker)
    yield gw
    gw.stop()


async def view(central: Central, gateway_id: str = GW) -> dict[str, Any]:
    return dict(await central.call("GET", f"/api/v1/gateways/{gateway_id}"))


async def heard(central: Central, gateway_id: str = GW) -> dict[str, Any] | None:
    data = await central.call("GET", "/api/v1/gateways")
    for g in data["gateways"]:
        if g["id"] == gateway_id and g["heartbeat_at"] and g["online"]:
            return dict(g)
    return None


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


async def _offline_after(central: Central, what: str) -> float:
    t0 = time.monotonic()
    await wait_for(
        lambda: _is_offline(central), 3 * KEEPALIVE, f"central to show the gateway offline ({what})"
    )
    return time.monotonic() - t0


async def _is_offline(central: Central) -> bool:
    return (await view(central))["state"] == "offline"


async def test_figures_equal_status_and_sigkill_shows_offline_within_keepalive(
    bridge: BridgeProcess, gateway_process: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    central = Central(http, bridge.url)
    await central.setup_crew()
    act = await central.new_activity()
    await gateway_process.async_start(http)
    await wait_for(lambda: heard(central), 20, "the first heartbeat")
    await central.dispatch(act["id"])
    device = Device(http, gateway_process.url)
    await wait_for(device.sign_in, 20, "the user push to reach the gateway")
    listed = await wait_for(device.activities, 20, "the dispatch to reach the gateway")
    await device.post(listed[0], 1, "completed", notes="all fine")
    await wait_for(lambda: _applied(device), 20, "the envelope to be applied and answered")

    # A heartbeat taken between two reads of the status page carries the same figures.
    for _attempt in range(5):
        before = await device.status()
        asked = datetime.now(UTC)
        await wait_for(
            lambda asked=asked: _heard_since(central, asked),
            10,
            "a heartbeat after the status read",
        )
        got = await view(central)
        after = await device.status()
        stable = ("envelopes", "last_sync", "rejected")
        if (
            all(before[k] == after[k] for k in stable)
            and before["disk"]["db_bytes"] == after["disk"]["db_bytes"]
        ):
            break
    else:
        raise AssertionError("the gateway's status kept changing")
    assert got["health"] == "ok", got["reasons"]
    assert got["version"] == before["gateway"]["version"]
    assert got["counts"] == before["envelopes"] and got["counts"]["applied"] == 1
    assert got["backlog"] == 0 and got["oldest_pending_s"] is None is before["oldest_pending_s"]
    assert got["rejected"] == before["envelopes"]["rejected"] == 0
    assert got["db_bytes"] == before["disk"]["db_bytes"]
    assert abs(got["disk_free_bytes"] - before["disk"]["free_bytes"]) < 64 * 1024**2
    assert _time(got["last_sync"]) == _time(before["last_sync"]) is not None
    assert got["cert_expires_at"] is None is before["backhaul"]["certificate_expires_at"]
    assert got["replica_lag_s"] is None and before["replication"] == {"enabled": False}
    assert got["devices"] == 1  # the one phone signed in
    upload = before["attachments_upload"]
    assert got["attachments_to_upload"] == upload["to_upload"] == 0
    assert got["attachments_to_upload_bytes"] == upload["to_upload_bytes"] == 0
    assert before["gateway"]["uptime_s"] <= got["uptime_s"] <= after["gateway"]["uptime_s"] + 1
    for name in ("backlog", "disk_free_bytes", "devices", "last_sync"):
        assert got["figures"][name]["heard_at"] == got["heartbeat_at"]

    # both sides' /metrics carry the pipeline
    async with http.get(gateway_process.url + "/metrics") as r:
        gw_metrics = _samples(await r.text())
    assert gw_metrics["outpost_backhaul_sent_bytes_total"] > 0
    assert gw_metrics["outpost_backhaul_sent_envelopes_total"] == 1
    assert gw_metrics["outpost_backhaul_up"] == 1
    assert gw_metrics['outpost_envelopes{state="applied"}'] == 1
    assert gw_metrics["outpost_backhaul_last_sync_timestamp_seconds"] > 0
    headers = {"Authorization": f"Bearer {_admin_token(bridge)}"}
    async with http.get(bridge.url + "/metrics", headers=headers) as r:
        central_metrics = _samples(await r.text())
    assert central_metrics['outpost_bridge_envelope_results_total{outcome="applied"}'] >= 1
    assert central_metrics["outpost_bridge_batches_total"] >= 1
    assert central_metrics[f'outpost_fleet_gateway_health{{gateway="{GW}"}}'] == 0

    gateway_process.signal(signal.SIGKILL)
    took = await _offline_after(central, "SIGKILL")
    print(f"\nSIGKILL -> offline at central in {took:.2f} s (keepalive {KEEPALIVE} s)")
    assert took < 1.5 * KEEPALIVE
    gone = await view(central)
    assert gone["online"] is False and gone["health"] == "critical"
    assert gone["reasons"][0]["code"] == "offline"


def _samples(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def _applied(device: Device) -> bool:
    envs = await device.envelopes()
    return bool(envs) and all(e["state"] == "applied" for e in envs)


async def _heard_since(central: Central, since: datetime) -> bool:
    at = _time((await view(central))["heartbeat_at"])
    return at is not None and at > since


async def test_a_hung_gateway_shows_offline_within_one_and_a_half_keepalives(
    bridge: BridgeProcess, gateway_process: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    central = Central(http, bridge.url)
    await gateway_process.async_start(http)
    await wait_for(lambda: heard(central), 20, "the first heartbeat")
    gateway_process.signal(signal.SIGSTOP)  # its TCP connection stays open; nothing is sent
    took = await _offline_after(central, "SIGSTOP")
    print(f"\nSIGSTOP -> offline at central in {took:.2f} s (keepalive {KEEPALIVE} s)")
    # MQTT lets the broker give up 1.5 keepalives after the last packet. Mosquitto
    # 2.0.x checks keepalives only every 6 s, in whole seconds (keepalive.c:
    # ``last_keepalive_check + 5 < now``, ``keepalive*3/2`` in integers), so it
    # may add up to ~7 s: measured here 8.2-11.8 s for keepalive 5 (about 1.7x
    # for the default keepalive 30). The SIGKILL case above is the immediate one.
    assert took < 1.5 * KEEPALIVE + MOSQUITTO_KEEPALIVE_TICK_S + 2
    # it comes back: online again, healthy again
    gateway_process.signal(signal.SIGCONT)
    await wait_for(lambda: _back(central), 20, "the gateway to reconnect and be online again")


async def _back(central: Central) -> bool:
    v = await view(central)
    return bool(v["online"] and v["health"] == "ok")


# --- the fleet page in a real browser ----------------------------------------------------


class SimulatedSites:
    """Other gateways of the fleet, as MQTT clients publishing state and heartbeats."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.clients: list[MqttClient] = []

    async def publish(self, gateway_id: str, state: str, **hb: Any) -> None:
        client = MqttClient(
            MqttSection(host=self.broker.host, port=self.broker.port),
            client_id=f"sim-{gateway_id}",
            on_message=_ignore,
            subscriptions=[],
        )
        self.clients.append(client)
        await client.async_start()
        await client.async_wait_connected(10)
        now = datetime.now(UTC)
        beat = {
            "counts": {"stored": 0, "queued": 0, "sent": 0, "applied": 120, "rejected": 0},
            "oldest_pending_s": None,
            "rejected": 0,
            "disk_free_bytes": 24 * 1024**3,
            "db_bytes": 18 * 1024**2,
            "replica_lag_s": 0.4,
            "devices": 3,
            "last_sync": now - timedelta(minutes=2),
            "cert_expires_at": now + timedelta(days=300),
            **hb,
        }
        online = GatewayState(gateway_id=gateway_id, state="online", at=now, version="0.1.0")
        await client.async_publish(topics.topic(gateway_id, topics.STATE), encode(online), qos=1)
        for i in range(3):
            message = Heartbeat(
                gateway_id=gateway_id,
                sent_at=now,
                version="0.1.0",
                uptime_s=86400 + i,
                **beat,
            )
            await client.async_publish(
                topics.topic(gateway_id, topics.UP_HEARTBEAT), encode(message), qos=1
            )
        if state == "offline":
            gone = GatewayState(gateway_id=gateway_id, state="offline", at=now)
            await client.async_publish(topics.topic(gateway_id, topics.STATE), encode(gone), qos=1)

    async def async_close(self) -> None:
        for c in self.clients:
            await c.async_stop()


async def _ignore(_msg: Any) -> None:
    return None


@pytest.fixture
async def sites(broker: Broker) -> AsyncIterator[SimulatedSites]:
    s = SimulatedSites(broker)
    yield s
    await s.async_close()


@pytest.mark.browser
async def test_fleet_page_renders_in_chromium_without_console_errors(
    tmp_path: Path,
    broker: Broker,
    request: pytest.FixtureRequest,
    gateway_process: GatewayProcess,
    sites: SimulatedSites,
    http: aiohttp.ClientSession,
) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (scripts/ensure-system-deps.sh)")
    from playwright.async_api import async_playwright

    # Every heartbeat into the history (not one per 5 min), so the real
    # gateway's page has a line to draw within seconds.
    bridge = BridgeProcess(
        tmp_path / "central",
        broker,
        f"sqlite:///{tmp_path / 'central' / 'central.db'}",
        fleet={"history_every_s": 0},
    )
    bridge.start()
    request.addfinalizer(bridge.stop)
    central = Central(http, bridge.url)
    await central.call(
        "PUT", "/api/v1/users/vera", {"password": "viewer password", "role": "viewer"}
    )
    await gateway_process.async_start(http)
    await sites.publish("quarry-north", "online", disk_free_bytes=700 * 1024**2)
    await sites.publish(
        "ship-aurora",
        "online",
        counts={"stored": 2, "queued": 14, "sent": 3, "applied": 410, "rejected": 1},
        oldest_pending_s=5400.0,
        rejected=1,
        cert_expires_at=datetime.now(UTC) + timedelta(days=12),
    )
    await sites.publish("substation-7", "offline", replica_lag_s=75.0)
    await wait_for(lambda: _all_heard(central, 4), 20, "four gateways at central")
    await wait_for(lambda: heard(central), 20, "the real gateway's heartbeats")

    errors: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
            ],
        )
        try:
            context = await browser.new_context(viewport={"width": 1440, "height": 820})
            page = await context.new_page()
            page.on(
                "console",
                lambda m: (
                    errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None
                ),
            )
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            await page.goto(bridge.url + "/fleet")  # a viewer signs in on the platform's page
            await page.get_by_label("User name").fill("vera")
            await page.get_by_label("Password").fill("not her password")
            await page.get_by_role("button", name="Sign in").click()
            await page.get_by_role("alert").wait_for()
            errors[:] = [e for e in errors if "401" not in e]  # the refused sign-in itself
            await page.get_by_label("Password").fill("viewer password")
            await page.get_by_role("button", name="Sign in").click()
            await page.locator("tr[data-gateway]").first.wait_for()
            rows = page.locator("tr[data-gateway]")
            assert await rows.count() == 4
            # worst first: the offline one, then the warnings, then the healthy gateway
            order = [await rows.nth(i).get_attribute("data-gateway") for i in range(4)]
            assert order[0] == "substation-7" and order[-1] == GW, order
            assert await rows.nth(0).locator(".badge").inner_text() == "CRITICAL"
            ship = page.locator('tr[data-gateway="ship-aurora"]')
            assert "certificate expires in 12 d" in await ship.inner_text()
            assert await page.locator('meta[http-equiv="refresh"]').count() == 1
            await page.screenshot(path=str(SCREENSHOTS / "fleet.png"), animations="disabled")

            await page.get_by_role("link", name=GW).click()
            await page.get_by_text("Figures, with when central last heard each").wait_for()
            assert await page.locator("svg.spark").count() >= 1
            await page.screenshot(
                path=str(SCREENSHOTS / "fleet-gateway.png"), full_page=True, animations="disabled"
            )
            await context.close()
        finally:
            await browser.close()
    assert not errors, errors


def _admin_token(bridge: BridgeProcess) -> str:
    for line in bridge.config.read_text().splitlines():
        if line.startswith("token"):
            return str(json.loads(line.split("=", 1)[1].strip()))
    raise AssertionError("no token in the bridge config")


async def _all_heard(central: Central, n: int) -> bool:
    data = await central.call("GET", "/api/v1/gateways")
    return sum(1 for g in data["gateways"] if g["heartbeat_at"]) >= n
