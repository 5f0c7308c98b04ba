"""The asyncio MQTT engine against a real Mosquitto."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from outpost.mqtt import MqttClient, NotConnected, Received
from outpost.mqtt_config import MqttSection
from tests.support.broker import Broker


def _settings(broker: Broker) -> MqttSection:
    return MqttSection(host=broker.host, port=broker.port, backoff_initial=0.05, backoff_max=0.5)


@asynccontextmanager
async def pub_sub(
    broker: Broker, topics: str, name: str
) -> AsyncIterator[tuple[MqttClient, asyncio.Queue[Received]]]:
    """A publisher, and a subscriber to ``topics`` whose messages go to the queue."""
    got: asyncio.Queue[Received] = asyncio.Queue()

    async def handler(msg: Received) -> None:
        await got.put(msg)

    sub = MqttClient(
        _settings(broker), client_id=f"sub{name}", on_message=handler, subscriptions=[(topics, 1)]
    )
    pub = MqttClient(_settings(broker), client_id=f"pub{name}")
    await sub.async_start()
    await pub.async_start()
    try:
        await sub.async_wait_connected(5)
        await pub.async_wait_connected(5)
        # The subscription is in place once the broker answered a SUBSCRIBE sent after
        # the one on connect (a client's packets are handled in order); a fixed
        # 0.1 s sleep here raced the broker on a loaded machine.
        await sub.async_subscribe([(topics, 1)])
        yield pub, got
    finally:
        await pub.async_stop()
        await sub.async_stop()


async def test_publish_waits_for_puback_and_messages_arrive(broker: Broker) -> None:
    async with pub_sub(broker, "t/#", "") as (pub, got):
        await pub.async_publish(
            "t/a",
            b"hello",
            qos=1,
            user_properties=[("envelope-ids", "x,y")],
            response_topic="t/reply",
            correlation_data=b"c1",
        )
        msg = await asyncio.wait_for(got.get(), 5)
        assert msg.payload == b"hello"
        assert msg.user_properties == {"envelope-ids": "x,y"}
        assert msg.response_topic == "t/reply"
        assert msg.correlation_data == b"c1"


async def test_cached_user_properties_go_with_each_message(broker: Broker) -> None:
    """User properties alone are packed once and reused (the bridge's codec advert):
    every message still carries its own set, and two sets never mix."""
    async with pub_sub(broker, "p/#", "-props") as (pub, got):
        sets = [[("codec", "2")], [("codec", "1"), ("x", "y")]]
        for i in range(6):
            await pub.async_publish(f"p/{i}", b"%d" % i, qos=1, user_properties=sets[i % 2])
        for i in range(6):
            msg = await asyncio.wait_for(got.get(), 5)
            assert msg.topic == f"p/{i}"
            assert msg.user_properties == dict(sets[i % 2])


async def test_publish_while_down_fails_fast_and_reconnect_resumes(broker: Broker) -> None:
    client = MqttClient(_settings(broker), client_id="flappy")
    await client.async_start()
    try:
        await client.async_wait_connected(5)
        broker.stop()
        await client.async_wait_disconnected(5)
        with pytest.raises(NotConnected):
            await client.async_publish("t/x", b"1")
        broker.start()
        await client.async_wait_connected(5)
        await client.async_publish("t/x", b"2")
        assert client.connect_count == 2
    finally:
        await client.async_stop()


async def test_persistent_session_gets_messages_queued_while_away(broker: Broker) -> None:
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def handler(msg: Received) -> None:
        await got.put(msg.payload)

    def make() -> MqttClient:
        return MqttClient(
            _settings(broker),
            client_id="gw-1",
            on_message=handler,
            subscriptions=[("down/#", 1)],
            clean_start=False,
            session_expiry_s=600,
        )

    gw = make()
    await gw.async_start()
    await gw.async_wait_connected(5)
    await gw.async_subscribe([("down/#", 1)])  # the session's subscription is in place
    await gw.async_stop()

    central = MqttClient(_settings(broker), client_id="central")
    await central.async_start()
    try:
        await central.async_wait_connected(5)
        await central.async_publish("down/dispatch", b"while-away", qos=1)
        # and across a broker restart (persistence on)
        broker.restart()
        gw = make()
        await gw.async_start()
        assert await asyncio.wait_for(got.get(), 10) == b"while-away"
    finally:
        await gw.async_stop()
        await central.async_stop()


async def test_unacked_message_is_redelivered(broker: Broker) -> None:
    """The ack goes only after the handler returns: a crash mid-handler means redelivery."""
    started = asyncio.Event()
    seen: list[bytes] = []

    async def stuck(msg: Received) -> None:
        seen.append(msg.payload)
        started.set()
        await asyncio.Event().wait()  # never returns: the process "dies" here

    async def ok(msg: Received) -> None:
        seen.append(msg.payload)
        started.set()

    sub = MqttClient(
        _settings(broker),
        client_id="worker",
        on_message=stuck,
        subscriptions=[("jobs", 1)],
        clean_start=False,
        session_expiry_s=600,
    )
    pub = MqttClient(_settings(broker), client_id="pub2")
    await sub.async_start()
    await pub.async_start()
    try:
        await sub.async_wait_connected(5)
        await pub.async_wait_connected(5)
        await sub.async_subscribe([("jobs", 1)])  # the subscription is in place
        await pub.async_publish("jobs", b"job-1")
        await asyncio.wait_for(started.wait(), 5)
        await sub.async_stop()
        started.clear()
        sub = MqttClient(
            _settings(broker),
            client_id="worker",
            on_message=ok,
            subscriptions=[("jobs", 1)],
            clean_start=False,
            session_expiry_s=600,
        )
        await sub.async_start()
        await asyncio.wait_for(started.wait(), 5)
        assert seen == [b"job-1", b"job-1"]
    finally:
        await sub.async_stop()
        await pub.async_stop()


async def test_stop_as_the_connect_completes_returns_and_leaves_no_connection(
    broker: Broker,
) -> None:
    """``async_stop`` while the blocking connect is finishing in its thread.

    Python 3.11's ``wait_for`` swallows the stop's cancellation when the awaited
    step finished in the same moment; the connection loop then went on to the
    CONNACK and waited for a disconnect nobody would ask for: the stop hung
    (seen as a test teardown that never ended, the bridge stopped right after its
    start). Here the moment is made exact: the connect is let go and finishes
    while the loop is blocked, and the stop is scheduled behind its completion.
    """
    client = MqttClient(_settings(broker), client_id="stop-while-connecting")
    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    connect = client._connect_blocking

    def slow_connect(paho_client: Any) -> None:
        started.set()
        release.wait(10)
        connect(paho_client)
        finished.set()

    client._connect_blocking = slow_connect  # type: ignore[method-assign]
    await client.async_start()
    assert await asyncio.to_thread(started.wait, 10)
    release.set()
    # Blocking the loop on purpose: the connect's completion is queued before the stop.
    assert finished.wait(10)
    paho_client = client._client
    assert paho_client is not None
    sock = paho_client.socket()
    assert sock is not None  # connected at the TCP level, the CONNACK still to come
    stop = asyncio.ensure_future(client.async_stop())
    await asyncio.wait_for(stop, 10)
    assert stop.done() and not stop.cancelled()
    assert not client.is_connected
    assert sock.fileno() == -1  # closed, not left open
