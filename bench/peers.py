"""The real peers the transfer benchmarks run against: the raw broker limit and a bridge."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.broker import Broker, free_port, wait_port

ADMIN_TOKEN = "bench-token-0123456789"


def raw_transfer(broker: Broker, payloads: list[bytes], topic: str = "raw/bench") -> float:
    """Seconds for paho to move ``payloads`` as QoS 1 messages (100 in flight) to a subscriber."""
    done = threading.Event()
    received = 0

    def on_message(c: Any, u: Any, m: Any) -> None:
        nonlocal received
        received += 1
        if received == len(payloads):
            done.set()

    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id="raw-sub", protocol=paho.MQTTv5)
    sub.on_message = on_message
    sub.connect(broker.host, broker.port)
    sub.subscribe("raw/#", qos=1)
    sub.loop_start()
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="raw-pub", protocol=paho.MQTTv5)
    pub.max_inflight_messages_set(100)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    time.sleep(0.5)
    start = time.perf_counter()
    infos = [pub.publish(topic, p, qos=1) for p in payloads]
    for info in infos:
        info.wait_for_publish(120)
    done.wait(300)
    elapsed = time.perf_counter() - start
    for c in (pub, sub):
        c.loop_stop()
        c.disconnect()
    assert received == len(payloads), f"raw subscriber got {received} of {len(payloads)}"
    return elapsed


@contextmanager
def bridge_process(broker: Broker, workdir: Path) -> Iterator[int]:
    """A real ``outpost-bridge`` (SQLite central under ``workdir``); yields its admin port."""
    admin = free_port()
    config = workdir / "bridge.toml"
    config.write_text(
        f'[central]\ndatabase_url = "sqlite:///{workdir}/central.db"\n'
        f'data_dir = "{workdir}/central"\n'
        f'[admin]\nport = {admin}\ntoken = "{ADMIN_TOKEN}"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
    )
    with open(workdir / "bridge.log", "wb") as log:
        bridge = subprocess.Popen(
            [str(Path(sys.executable).parent / "outpost-bridge"), "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_port(admin, 30)
        yield admin
    finally:
        bridge.terminate()
        bridge.wait(10)
