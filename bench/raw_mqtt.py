"""The raw broker limit both transfer benchmarks measure against (same broker, same run)."""

from __future__ import annotations

import threading
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from outpost.localbroker import Broker


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
