"""An MQTT 5 client driven from the asyncio event loop (paho-mqtt 2 underneath).

One engine for both sides. Usage::

    client = MqttClient(settings, client_id="gw-site-a", on_message=handler,
                        subscriptions=[("outpost/v1/gw/site-a/down/#", 1)],
                        clean_start=False, session_expiry_s=7 * 86400,
                        will=Will(topic, payload, retain=True),
                        on_connect=async_on_connect)
    await client.async_start()          # connects in the background, forever
    await client.async_wait_connected(timeout=10)
    await client.async_publish(topic, payload, qos=1)   # resolves on PUBACK
    await client.async_stop()

Design (after Home Assistant's ``mqtt/client.py``):

- paho never runs its own thread: the socket is watched with
  ``loop.add_reader``/``add_writer``, keepalive runs on a 1 s timer, and the
  blocking TCP/TLS connect runs in an executor. Every paho callback therefore
  fires in the event loop thread.
- Our own reconnect loop (``reconnect_on_failure=False``): exponential backoff
  with full jitter, forever, capped low (``backoff_max``, seconds).
- Received QoS 1 messages are acknowledged manually, only after the async
  ``on_message`` handler returned: a crash before the handler finished means
  the broker delivers the message again. Messages are handled in arrival
  order per partition (``partition(topic)``, default: one partition), so one
  slow gateway's traffic need not hold up another's.
- ``publish_nowait`` hands a message to the socket and returns the future of
  its PUBACK, so a caller can keep several in flight (``async_publish``
  awaits it). Every QoS 1 message feeds :attr:`MqttClient.meter`
  (:mod:`outpost.linkmeter`): the link's measured rate and round trip.
- ``async_publish`` while disconnected raises :class:`NotConnected` at once:
  paho would keep QoS 1 messages in memory only; the caller's durable store
  is the source of truth and resends after reconnect.
- Every (re)connect resubscribes: after a broker restart without persistence
  the session is gone (``session_present`` false).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from outpost.linkmeter import LinkMeter
from outpost.mqtt_config import MqttSection

_LOGGER = logging.getLogger(__name__)

MISC_INTERVAL = 1.0
RECEIVE_MAXIMUM = 100  # default: unacked QoS 1 messages the broker may send us at once
HANDLER_QUEUE = 1000


class NotConnected(ConnectionError):
    """The broker is not reachable right now; nothing was sent."""


class PublishFailed(ConnectionError):
    """The broker refused a publish (e.g. not authorised) or the link dropped first."""


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class Received:
    """A message as the handler sees it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    user_properties: dict[str, str] = field(default_factory=dict)
    response_topic: str | None = None
    correlation_data: bytes | None = None
    received_at: float = field(default_factory=time.time)  # wall clock, as it came off the socket


class PackedProperties(Properties):
    """PUBLISH properties that are packed once.

    paho packs a message's properties again on every send (walking all its
    property names: ~8 us here), though a cached set never changes after it
    is first sent.
    """

    def pack(self) -> bytes:
        packed: bytes | None = self.__dict__.get("_packed")
        if packed is None:
            packed = super().pack()  # type: ignore[no-untyped-call]
            object.__setattr__(self, "_packed", packed)  # (paho's __setattr__ checks names)
        return packed


MessageHandler = Callable[[Received], Awaitable[None]]
ConnectHandler = Callable[[bool], Awaitable[None]]
DisconnectHandler = Callable[[], Awaitable[None]]


def tls_context(settings: MqttSection) -> ssl.SSLContext:
    """The client TLS context; outpost.tls checks the files and explains problems."""
    from outpost import tls

    ctx = tls.client_context(settings)
    assert ctx is not None
    return ctx


class MqttClient:
    """See the module docstring."""

    def __init__(
        self,
        settings: MqttSection,
        *,
        client_id: str,
        on_message: MessageHandler | None = None,
        subscriptions: Iterable[tuple[str, int]] = (),
        clean_start: bool = False,
        session_expiry_s: int = 0,
        will: Will | None = None,
        on_connect: ConnectHandler | None = None,
        on_disconnect: DisconnectHandler | None = None,
        partition: Callable[[str], str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        keepalive: Callable[[LinkMeter], int] | None = None,
        receive_maximum: int = RECEIVE_MAXIMUM,
    ) -> None:
        self._settings = settings
        self._receive_maximum = receive_maximum
        # Chooses the keepalive of the next connection (default: the setting).
        self._keepalive = keepalive or (lambda _meter: settings.keepalive)
        self.meter = LinkMeter()
        self.keepalive_s = settings.keepalive
        self.client_id = client_id
        self._on_message_cb = on_message
        self._subscriptions = list(subscriptions)
        self._clean_start = clean_start
        self._session_expiry_s = session_expiry_s
        self._will = will
        self._on_connect_cb = on_connect
        self._on_disconnect_cb = on_disconnect
        self._partition = partition or (lambda _topic: "")
        self._ssl_context = ssl_context
        if settings.tls and ssl_context is None:
            self._ssl_context = tls_context(settings)

        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: paho.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._misc_handle: asyncio.TimerHandle | None = None
        self._sock: Any = None
        self._fileno = -1
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._disconnected.set()
        self._stopping = False
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._sub_pending: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._props_cache: dict[tuple[tuple[str, str], ...], Properties] = {}
        self._workers: dict[str, tuple[asyncio.Queue[Any], asyncio.Task[None]]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self.last_error: str | None = None
        self.connect_count = 0

    # --- public API --------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    async def async_start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._task = asyncio.create_task(self._async_run(), name=f"mqtt:{self.client_id}")

    async def async_wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def async_wait_disconnected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._disconnected.wait(), timeout)

    async def async_stop(self) -> None:
        """Disconnect cleanly (no last will) and stop reconnecting."""
        self._stopping = True
        await self._async_disconnect()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        # A connect that completed while we stopped (see _async_run) is closed too,
        # and one still waiting for its CONNACK is not left open for the GC to find.
        await self._async_disconnect()
        self._teardown_socket()
        if self._client is not None and not self._connected.is_set():
            sock = self._client.socket()
            if sock is not None:
                sock.close()
        for _queue, task in self._workers.values():
            task.cancel()
        for _queue, task in list(self._workers.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()
        for t in list(self._background):
            t.cancel()
        self._fail_pending(NotConnected("client stopped"))

    async def _async_disconnect(self) -> None:
        if self._client is not None and self._connected.is_set():
            self._client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._disconnected.wait(), 2)

    async def async_publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        *,
        user_properties: Iterable[tuple[str, str]] = (),
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        wait: bool = True,
    ) -> None:
        """Publish; with ``wait`` (and QoS 1) return only once the broker's PUBACK arrived.

        Raises :class:`NotConnected` when the link is down (nothing queued in
        memory) and :class:`PublishFailed` when the link drops before the
        PUBACK or the broker refuses the message.
        """
        fut = self.publish_nowait(
            topic,
            payload,
            qos,
            retain,
            user_properties=user_properties,
            response_topic=response_topic,
            correlation_data=correlation_data,
        )
        if wait:
            await fut

    def publish_nowait(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        *,
        user_properties: Iterable[tuple[str, str]] = (),
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
    ) -> asyncio.Future[None]:
        """Hand a message to the socket now; the returned future resolves on its PUBACK.

        Raises :class:`NotConnected` at once when the link is down; the future
        fails with :class:`PublishFailed` when the link drops before the
        PUBACK or the broker refuses the message. Loop thread only.
        """
        if self._client is None or not self._connected.is_set():
            raise NotConnected("not connected to the broker")
        loop = asyncio.get_running_loop()
        props = None
        user_props = tuple(user_properties)
        if user_props and not (response_topic or correlation_data):
            # The same few user properties on every message (the bridge's codec advert):
            # building paho's Properties was 8 % of the bridge's event loop.
            props = self._props_cache.get(user_props)
            if props is None:
                props = PackedProperties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                props.UserProperty = list(user_props)
                if len(self._props_cache) < 16:
                    self._props_cache[user_props] = props
        elif user_props or response_topic or correlation_data:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if user_props:
                props.UserProperty = list(user_props)
            if response_topic:
                props.ResponseTopic = response_topic
            if correlation_data:
                props.CorrelationData = correlation_data
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise NotConnected(f"publish failed: {paho.error_string(info.rc)}")
        fut: asyncio.Future[None] = loop.create_future()
        if qos == 0 or info.is_published():
            fut.set_result(None)
            return fut
        self._pending[info.mid] = fut
        self.meter.on_send(info.mid, len(payload) + len(topic))
        return fut

    async def async_subscribe(self, subs: list[tuple[str, int]]) -> list[ReasonCode]:
        """Subscribe now and return the broker's reason codes (for ACL checks)."""
        if self._client is None or not self._connected.is_set():
            raise NotConnected("not connected to the broker")
        rc, mid = self._client.subscribe(subs)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise NotConnected(f"subscribe failed: {paho.error_string(rc)}")
        fut: asyncio.Future[list[ReasonCode]] = asyncio.get_running_loop().create_future()
        self._sub_pending[mid] = fut
        return await fut

    # --- the connection loop -------------------------------------------------

    def _make_client(self) -> paho.Client:
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5,
            reconnect_on_failure=False,
            manual_ack=True,
        )
        if self._settings.username:
            client.username_pw_set(self._settings.username, self._settings.password)
        if self._ssl_context is not None:
            client.tls_set_context(self._ssl_context)
        if self._will is not None:
            client.will_set(
                self._will.topic, self._will.payload, qos=self._will.qos, retain=self._will.retain
            )
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        return client

    def _connect_blocking(self, client: paho.Client) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._session_expiry_s
        props.ReceiveMaximum = self._receive_maximum
        client.connect(
            self._settings.host,
            self._settings.port,
            keepalive=self.keepalive_s,
            clean_start=self._clean_start,
            properties=props,
        )

    async def _async_run(self) -> None:
        assert self._loop is not None
        delay = self._settings.backoff_initial
        while not self._stopping:
            client = self._make_client()
            self._client = client
            self._disconnected.clear()
            self.keepalive_s = self._keepalive(self.meter)
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a
                # cancellation (async_stop's) that comes as the awaited step finishes.
                async with asyncio.timeout(self._settings.connect_timeout):
                    await self._loop.run_in_executor(None, self._connect_blocking, client)
                # CONNACK arrives through the reader; wait for it or for a drop.
                async with asyncio.timeout(self._settings.connect_timeout):
                    await self._wait_any(self._connected, self._disconnected)
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                self._note_error(
                    f"cannot reach broker {self._settings.host}:{self._settings.port}: {exc or type(exc).__name__}"
                )
                self._teardown_socket()
                self._mark_disconnected()
            if self._stopping:
                # async_stop came while we connected (and its cancellation was lost
                # somewhere): waiting for a disconnect here would wait for ever;
                # async_stop closes what we opened.
                break
            if self._connected.is_set():
                delay = self._settings.backoff_initial
                await self._disconnected.wait()
            if self._stopping:
                break
            # Full jitter keeps a fleet from reconnecting in lock-step.
            sleep = random.uniform(delay / 2, delay)
            _LOGGER.debug(
                "reconnecting to %s:%s in %.2fs", self._settings.host, self._settings.port, sleep
            )
            await asyncio.sleep(sleep)
            delay = min(delay * 2, self._settings.backoff_max)

    @staticmethod
    async def _wait_any(*events: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    def _note_error(self, message: str) -> None:
        if message != self.last_error:
            _LOGGER.warning("%s (%s)", message, self.client_id)
        self.last_error = message

    # --- socket plumbing (all in the loop thread, scheduled thread-safely) ---

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._in_loop_thread():
            self._async_socket_open(client, sock)
        elif self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._async_socket_open, client, sock)

    def _async_socket_open(self, client: paho.Client, sock: Any) -> None:
        if client is not self._client:
            return
        fileno = sock.fileno()
        if fileno < 0:
            return
        self._sock = sock
        self._fileno = fileno
        assert self._loop is not None
        self._loop.add_reader(fileno, self._async_readable, client)
        if client.want_write():
            self._loop.add_writer(fileno, self._async_writable, client)
        self._schedule_misc(client)

    def _async_readable(self, client: paho.Client) -> None:
        client.loop_read(RECEIVE_MAXIMUM)
        # TLS may hold decrypted bytes the fd readiness won't report.
        sock = self._sock
        while sock is not None and client is self._client and getattr(sock, "pending", None):
            if not sock.pending():
                break
            client.loop_read(RECEIVE_MAXIMUM)
            sock = self._sock

    def _async_writable(self, client: paho.Client) -> None:
        client.loop_write()

    def _schedule_misc(self, client: paho.Client) -> None:
        assert self._loop is not None

        def _misc() -> None:
            if client is not self._client or self._sock is None:
                return
            client.loop_misc()
            self._misc_handle = self._loop.call_later(MISC_INTERVAL, _misc)  # type: ignore[union-attr]

        self._misc_handle = self._loop.call_later(MISC_INTERVAL, _misc)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # paho calls this just before closing the socket: unregister now, while
        # the fd number is still ours (a new socket may reuse it at once).
        if self._in_loop_thread():
            if self._sock is sock:
                self._teardown_socket()
        elif self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._teardown_socket)

    def _in_loop_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _teardown_socket(self) -> None:
        if self._misc_handle is not None:
            self._misc_handle.cancel()
            self._misc_handle = None
        self._sock = None
        fileno, self._fileno = self._fileno, -1
        if fileno >= 0 and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(fileno)
            self._loop.remove_writer(fileno)

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if self._in_loop_thread():
            self._async_register_write(client, sock)
        elif self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._async_register_write, client, sock)

    def _async_register_write(self, client: paho.Client, sock: Any) -> None:
        if client is self._client and self._sock is sock and self._fileno >= 0:
            self._loop.add_writer(self._fileno, self._async_writable, client)  # type: ignore[union-attr]

    def _on_socket_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if self._in_loop_thread():
            self._async_unregister_write(sock)
        elif self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._async_unregister_write, sock)

    def _async_unregister_write(self, sock: Any) -> None:
        if self._sock is sock and self._fileno >= 0:
            self._loop.remove_writer(self._fileno)  # type: ignore[union-attr]

    # --- paho callbacks (loop thread) ---------------------------------------

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if client is not self._client:
            return
        if reason_code.is_failure:
            self._note_error(f"broker refused the connection: {reason_code}")
            return  # paho closes the socket; on_disconnect follows
        self.connect_count += 1
        self.meter.reset()
        if self.last_error:
            _LOGGER.info(
                "connected to %s:%s (%s)", self._settings.host, self._settings.port, self.client_id
            )
        self.last_error = None
        if self._subscriptions:
            client.subscribe(self._subscriptions)
        self._connected.set()
        if self._on_connect_cb is not None:
            self._spawn(self._on_connect_cb(flags.session_present), "on_connect")

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if client is not self._client:
            return
        if not self._stopping and self._connected.is_set():
            self._note_error(f"lost the broker connection: {reason_code}")
        self._mark_disconnected()

    def _mark_disconnected(self) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._disconnected.set()
        self._fail_pending(PublishFailed("connection lost before the broker acknowledged"))
        if was_connected and self._on_disconnect_cb is not None:
            self._spawn(self._on_disconnect_cb(), "on_disconnect")

    def _fail_pending(self, exc: Exception) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # mark retrieved: a caller may have gone
        subs, self._sub_pending = self._sub_pending, {}
        for sfut in subs.values():
            if not sfut.done():
                sfut.set_exception(NotConnected(str(exc)))
                sfut.exception()

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        fut = self._pending.pop(mid, None)
        if reason_code.is_failure:
            self.meter.on_lost(mid)
        else:
            self.meter.on_ack(mid)
        if fut is None:
            return  # QoS 0, or a publish nobody waits for
        if fut.done():
            return
        if reason_code.is_failure:
            fut.set_exception(PublishFailed(f"broker refused the message: {reason_code}"))
        else:
            fut.set_result(None)

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        fut = self._sub_pending.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(list(reason_codes))
            return
        for topic, code in zip(self._subscriptions, reason_codes, strict=False):
            if code.is_failure:
                _LOGGER.error("broker refused subscription %s: %s", topic[0], code)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        user = dict(getattr(props, "UserProperty", None) or [])
        received = Received(
            topic=msg.topic,
            payload=bytes(msg.payload),
            qos=msg.qos,
            retain=bool(msg.retain),
            user_properties=user,
            response_topic=getattr(props, "ResponseTopic", None),
            correlation_data=getattr(props, "CorrelationData", None),
        )
        key = self._partition(msg.topic)
        worker = self._workers.get(key)
        if worker is None:
            queue: asyncio.Queue[Any] = asyncio.Queue(HANDLER_QUEUE)
            task = asyncio.create_task(self._async_worker(queue), name=f"mqtt-handler:{key}")
            worker = (queue, task)
            self._workers[key] = worker
        try:
            worker[0].put_nowait((client, msg.mid, received))
        except asyncio.QueueFull:
            # Not acked: the broker redelivers after reconnect. Receive Maximum
            # keeps this from happening in practice.
            _LOGGER.warning("handler queue full; leaving %s unacknowledged", msg.topic)

    async def _async_worker(self, queue: asyncio.Queue[Any]) -> None:
        while True:
            item: tuple[paho.Client, int, Received] = await queue.get()
            client, mid, received = item
            try:
                if self._on_message_cb is not None:
                    await self._on_message_cb(received)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Loop boundary: log and ack, a poison message must not wedge the link.
                _LOGGER.exception("handler failed for a message on %s", received.topic)
            if received.qos > 0 and client is self._client and self._connected.is_set():
                client.ack(mid, received.qos)

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        async def _run() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                _LOGGER.exception("%s callback failed (%s)", name, self.client_id)

        task = asyncio.create_task(_run(), name=f"mqtt-{name}:{self.client_id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
