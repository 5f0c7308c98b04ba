"""A provisioned fleet on a real Mosquitto run with the config `broker-config` wrote.

``fleet`` runs the real CLI: ``init-ca``, ``add-gateway gw-a`` and ``gw-b``,
``add-bridge``, ``broker-config``; installs every bundle into its own root
with ``install``; and starts Mosquitto with the generated config. Peers are
plain paho-mqtt (MQTT 5) clients whose TLS context comes from
``outpost.tls.client_context`` on the installed config, so the whole chain
bundle -> install -> config -> TLS -> broker ACL is what the tests exercise.
"""

from __future__ import annotations

import queue
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from cloud_bridge.config import BridgeConfig
from gateway.config import GatewayConfig
from outpost.config import load_config
from outpost.tls import client_context
from provisioning.cli import main
from tests.support.broker import Broker, free_port


def provision(*argv: str) -> None:
    rc = main(list(argv))
    assert rc == 0, f"outpost-provision {' '.join(argv)} failed"


class Peer:
    """A paho MQTT 5 client on its own loop thread, with waitable events."""

    def __init__(self, port: int, ctx: ssl.SSLContext | None, client_id: str) -> None:
        self.port = port
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
        )
        if ctx is not None:
            self.client.tls_set_context(ctx)
        self.connected = threading.Event()
        self.closed = threading.Event()
        self.connect_reason: ReasonCode | None = None
        self.error: BaseException | None = None
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self._cond = threading.Condition()
        self._pubacks: dict[int, ReasonCode] = {}
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._started = False
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self.connect_reason = reason
        if not reason.is_failure:
            self.connected.set()
        else:
            self.closed.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self.connected.clear()
        self.closed.set()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        with self._cond:
            self._pubacks[mid] = reason
            self._cond.notify_all()

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        with self._cond:
            self._subacks[mid] = reasons
            self._cond.notify_all()

    def start(self, timeout: float = 10.0) -> bool:
        """Connect; True once the broker accepted us, False if it refused or hung up."""
        try:
            self.client.connect("127.0.0.1", self.port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:  # refused during the TLS handshake
            self.error = exc
            return False
        self.client.loop_start()
        self._started = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.connected.is_set():
                return True
            if self.closed.is_set():
                return False
            time.sleep(0.01)
        raise AssertionError("neither CONNACK nor disconnect within the timeout")

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> ReasonCode:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        with self._cond:
            assert self._cond.wait_for(lambda: info.mid in self._pubacks, timeout=10), "no PUBACK"
            return self._pubacks.pop(info.mid)

    def subscribe(self, *filters: str) -> list[ReasonCode]:
        _rc, mid = self.client.subscribe([(f, 1) for f in filters])
        with self._cond:
            assert self._cond.wait_for(lambda: mid in self._subacks, timeout=10), "no SUBACK"
            return self._subacks.pop(mid)

    def expect(self, timeout: float = 10.0) -> paho.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def kill(self) -> None:
        """Drop the connection without DISCONNECT, as a power cut would: the will goes out."""
        self.client.loop_stop()
        self._started = False
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def stop(self) -> None:
        if self._started:
            if self.connected.is_set():
                self.client.disconnect()
            self.client.loop_stop()
            self._started = False


@dataclass
class Fleet:
    tmp: Path
    dir: Path
    broker: Broker
    roots: dict[str, Path]
    peers: list[Peer]

    @property
    def port(self) -> int:
        return self.broker.port

    def config(self, name: str) -> GatewayConfig | BridgeConfig:
        root = self.roots[name]
        if (root / "bridge.toml").exists():
            return load_config(BridgeConfig, root / "bridge.toml", environ={})
        return load_config(GatewayConfig, root / "gateway.toml", environ={})

    def context(self, name: str) -> ssl.SSLContext:
        ctx = client_context(self.config(name).mqtt)
        assert ctx is not None
        return ctx

    def peer(
        self, name: str, client_id: str | None = None, ctx: ssl.SSLContext | None = None
    ) -> Peer:
        p = Peer(self.port, ctx if ctx is not None else self.context(name), client_id or name)
        self.peers.append(p)
        return p

    def connected(self, name: str, client_id: str | None = None) -> Peer:
        p = self.peer(name, client_id)
        assert p.start(), f"{name} could not connect: {p.connect_reason or p.error}"
        return p

    def install(self, name: str, bundle: Path) -> Path:
        root = self.tmp / "devices" / name
        provision("install", str(bundle), "--root", str(root))
        self.roots[name] = root
        return root


@pytest.fixture
def fleet(tmp_path: Path, broker_factory: type[Broker]) -> Iterator[Fleet]:
    d = tmp_path / "fleet"
    port = free_port()
    addr = f"127.0.0.1:{port}"
    provision("init-ca", "--dir", str(d), "--name", "Test fleet")
    provision("add-gateway", "gw-a", "--site", "Site A", "--broker", addr, "--dir", str(d))
    provision("add-gateway", "gw-b", "--site", "Site B", "--broker", addr, "--dir", str(d))
    provision("add-bridge", "--broker", addr, "--dir", str(d))
    out = tmp_path / "broker-conf"
    provision(
        "broker-config",
        "--dir",
        str(d),
        "--listen",
        addr,
        "--host",
        "127.0.0.1",
        "--host",
        "localhost",
        "--out",
        str(out),
    )
    conf = (out / "outpost.conf").read_text()
    broker = broker_factory(tmp_path / "mosquitto", port=port, persistence=False, extra=conf)
    f = Fleet(tmp=tmp_path, dir=d, broker=broker, roots={}, peers=[])
    for name in ("gw-a", "gw-b", "bridge.central"):
        f.install(name, d / "bundles" / f"{name}.bundle")
    broker.start()
    yield f
    for p in f.peers:
        p.stop()
