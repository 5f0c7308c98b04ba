"""A provisioned fleet, end to end over mutual TLS.

Everything a technician does, for real: ``init-ca``, ``add-gateway``,
``add-bridge``, ``broker-config``, ``install`` of both bundles; Mosquitto runs
the generated config; the bridge is ``outpost-bridge run --config`` on the
installed ``bridge.toml`` and the gateway runs from the installed
``gateway.toml`` (test-only values such as ports and data directories come
from ``OUTPOST_<SECTION>_<KEY>`` overrides, as a deployment's would). A crew
member's envelope then travels device -> gateway -> broker -> bridge -> central.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app import running_gateway
from gateway.config import GatewayConfig
from outpost.config import load_config
from provisioning.cli import main
from tests.e2e.conftest import ADMIN_TOKEN, Central, Device, wait_for
from tests.support.broker import Broker, free_port, wait_port

GW = "site-tls"


def provision(*argv: str) -> None:
    assert main(list(argv)) == 0, argv


class Provisioned:
    def __init__(self, tmp: Path, broker_factory: type[Broker]) -> None:
        self.tmp = tmp
        self.port = free_port()
        d, addr = tmp / "fleet", f"127.0.0.1:{self.port}"
        provision("init-ca", "--dir", str(d))
        provision("add-gateway", GW, "--site", "TLS site", "--broker", addr, "--dir", str(d))
        provision("add-bridge", "--broker", addr, "--dir", str(d))
        provision("broker-config", "--dir", str(d), "--listen", addr, "--out", str(tmp / "mq"))
        self.gw_root, self.bridge_root = tmp / "device" / "etc", tmp / "central" / "etc"
        provision("install", str(d / "bundles" / f"{GW}.bundle"), "--root", str(self.gw_root))
        provision(
            "install", str(d / "bundles" / "bridge.central.bundle"), "--root", str(self.bridge_root)
        )
        conf = (tmp / "mq" / "outpost.conf").read_text()
        self.broker = broker_factory(tmp / "mosquitto", port=self.port, extra=conf)

    def gateway_config(self) -> GatewayConfig:
        env = {
            "OUTPOST_GATEWAY_DATA_DIR": str(self.tmp / "device" / "data"),
            "OUTPOST_LAN_HOST": "127.0.0.1",
            "OUTPOST_LAN_PORT": "0",
            "OUTPOST_LAN_DISK_FREE_FLOOR_MB": "0",
            "OUTPOST_DISCOVERY_ENABLED": "false",
            "OUTPOST_MQTT_BACKOFF_INITIAL": "0.05",
            "OUTPOST_MQTT_BACKOFF_MAX": "0.5",
        }
        return load_config(GatewayConfig, self.gw_root / "gateway.toml", environ=env)


@pytest.fixture
def fleet(tmp_path: Path, broker_factory: type[Broker]) -> Provisioned:
    f = Provisioned(tmp_path, broker_factory)
    f.broker.start()
    return f


@pytest.fixture
def bridge(fleet: Provisioned) -> Iterator[str]:
    data = fleet.tmp / "central" / "data"
    data.mkdir(parents=True)
    admin_port = free_port()
    env = {
        **os.environ,
        "OUTPOST_CENTRAL_DATABASE_URL": f"sqlite:///{data / 'central.db'}",
        "OUTPOST_CENTRAL_DATA_DIR": str(data),
        "OUTPOST_ADMIN_PORT": str(admin_port),
        "OUTPOST_ADMIN_TOKEN": ADMIN_TOKEN,
        "OUTPOST_MQTT_BACKOFF_INITIAL": "0.05",
        "OUTPOST_MQTT_BACKOFF_MAX": "0.5",
    }
    log = fleet.tmp / "bridge.log"
    exe = Path(sys.executable).parent / "outpost-bridge"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(exe), "run", "--config", str(fleet.bridge_root / "bridge.toml")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        try:
            wait_port(admin_port, timeout=30)
        except TimeoutError:
            raise AssertionError(f"bridge did not start:\n{log.read_text()[-3000:]}") from None
        yield f"http://127.0.0.1:{admin_port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_a_provisioned_gateway_syncs_to_the_bridge_over_mutual_tls(
    fleet: Provisioned, bridge: str, http: aiohttp.ClientSession
) -> None:
    central = Central(http, bridge)
    await central.setup_crew(site=GW)
    act = await central.new_activity(title="Substation fence")
    cfg = fleet.gateway_config()
    assert cfg.mqtt.tls and cfg.mqtt.cert == fleet.gw_root / "tls" / "gateway.crt"
    async with running_gateway(cfg) as gw:
        await central.dispatch(act["id"], GW)
        device = Device(http, gw.url)
        await wait_for(device.sign_in, 20, "the crew's credentials to reach the gateway")

        async def listed() -> list[dict[str, Any]] | None:
            items = await device.activities()
            return items or None

        (activity,) = await wait_for(listed, 20, "the dispatch to reach the gateway")
        sent = await device.post(activity, 1, "completed", notes="over mTLS")

        async def applied() -> bool:
            return any(
                e["envelope_id"] == sent["envelope_id"] and e["state"] == "applied"
                for e in await device.envelopes()
            )

        await wait_for(applied, 30, "the envelope to be applied centrally")
        record = await central.call("GET", f"/api/v1/activities/{act['id']}/record")
        assert "over mTLS" in str(record)
        fleet_view = await central.call("GET", f"/api/v1/gateways/{GW}")
        assert GW in str(fleet_view)
    # Both sides were who their certificates say: the broker took the CN as username.
    log = fleet.broker.log.read_text()
    assert f"u'{GW}'" in log and "u'bridge.central'" in log
