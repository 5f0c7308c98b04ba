"""The gateway's link to central: store-and-forward up, dispatches down.

One :class:`Uplink` per gateway process. It owns the MQTT client and:

- drains the outbox the moment the broker acknowledges the connection, and
  whenever the store commits new work, in compressed batches bounded in
  count and bytes (sized to the measured link, :mod:`gateway.linkplan`),
  with at most ``inflight_batches`` awaiting central's ack; envelopes go
  ahead of attachment chunks, which never queue more than about
  ``send_queue_s`` of link time in front of them;
- moves envelopes ``queued → sent`` on PUBACK and to ``applied``/``rejected``
  only on central's application-level result; a batch without a result in
  ``ack_timeout_s``, or across a reconnect, goes again (central dedupes by
  envelope id, so this is safe);
- applies what central sends down: results, dispatches, recalls, user and
  permission snapshots, check-out answers;
- sends the attachments of completed activities up, chunk by chunk
  (:mod:`gateway.blob_upload`);
- answers check-out requests by asking central (request/response with
  correlation data and a timeout), and fails fast when the link is down;
- keeps the link's state for ``/api/v1/status``: up/down, since when, last
  sync, bytes sent.

All of it runs in the event loop; database work goes through the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from aiohttp import web

from gateway import linkplan
from gateway.blob_upload import BlobUploader
from gateway.config import GatewayConfig
from gateway.store.activities import RecallActivity, UpsertActivity
from gateway.store.outbox import ApplyResults, ClaimBatch, Claimed, MarkSent, Requeue
from gateway.store.store import Store
from gateway.store.users import ReplaceUsers
from outpost import __version__
from outpost.mqtt import MqttClient, NotConnected, PublishFailed, Received, Will
from outpost.times import utcnow as _now
from outpost.tls import certificate_expiry
from outpost.wire import topics
from outpost.wire.codec import (
    CODEC_NEWEST,
    CODEC_PROPERTY,
    CODEC_VERSION,
    CODEC_ZSTD,
    DecodeError,
    decode,
    encode,
    encode_for_peer,
    encode_json,
)
from outpost.wire.schemas import (
    BatchDeferred,
    BlobReceipt,
    CheckoutAnswer,
    CheckoutRequest,
    Dispatch,
    EnvelopeResults,
    GatewayState,
    Heartbeat,
    Recall,
    UserPush,
)

_LOGGER = logging.getLogger(__name__)

ACK_CHECK_INTERVAL = 1.0


class BackhaulDownError(ConnectionError):
    """No link to central right now."""


@dataclass
class _Batch:
    batch_id: str
    envelope_ids: set[str]
    timeout: float
    sent_at: float = field(default_factory=time.monotonic)


# Below this rate zstd's strongest levels cost less than the bytes they save.
SLOW_LINK_BYTES_PER_S = 125_000


class Uplink:
    """See the module docstring. Implements the gateway's ``Backhaul`` seam."""

    def __init__(
        self,
        config: GatewayConfig,
        store: Store,
        *,
        heartbeat: Callable[[], Awaitable[Heartbeat]] | None = None,
    ) -> None:
        self._config = config
        self._mqtt_cfg = config.mqtt
        self._store = store
        self.gateway_id = config.gateway.id
        self.heartbeat_source = heartbeat
        gid = self.gateway_id
        self._t_envelopes = topics.topic(gid, topics.UP_ENVELOPES)
        self._t_checkout = topics.topic(gid, topics.UP_CHECKOUT)
        self._t_heartbeat = topics.topic(gid, topics.UP_HEARTBEAT)
        self._t_state = topics.topic(gid, topics.STATE)
        self._t_checkout_answer = topics.topic(gid, topics.DOWN_CHECKOUT)
        self._t_blobs = topics.topic(gid, topics.UP_BLOBS)
        will = Will(
            self._t_state,
            encode(GatewayState(gateway_id=gid, state="offline", at=_now(), version=__version__)),
            qos=1,
            retain=True,
        )
        self._client = MqttClient(
            self._mqtt_cfg,
            client_id=self._mqtt_cfg.client_id or f"outpost-gw-{gid}",
            on_message=self._async_on_message,
            subscriptions=[(s, 1) for s in topics.gateway_subscriptions(gid)],
            clean_start=False,
            session_expiry_s=self._mqtt_cfg.session_expiry_s,
            will=will,
            on_connect=self._async_on_connect,
            on_disconnect=self._async_on_disconnect,
            keepalive=lambda meter: linkplan.keepalive(meter, self._mqtt_cfg),
        )
        self.meter = self._client.meter
        self._wake = asyncio.Event()
        self._awaiting: dict[str, _Batch] = {}
        self._by_envelope: dict[str, str] = {}
        self._publishing = 0
        # Back-off (monotonic time): no batch leaves before it. Central said "busy",
        # or batches went unanswered ``_misses`` rounds in a row.
        self._hold_until = 0.0
        self._misses = 0
        self._connects = 0
        # The client reports "connected" before this connection's handler has run;
        # a batch claimed in between would be requeued by that handler and sent twice.
        self._drain_ready = False
        self._checkouts: dict[uuid.UUID, asyncio.Future[CheckoutAnswer]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._remove_listener: Callable[[], None] | None = None
        self._up_since: datetime | None = None
        self._down_since: datetime = _now()
        self._last_sync: datetime | None = None
        self.bytes_sent = 0
        self.envelopes_sent = 0
        self.json_bytes_sent = 0  # the batches' JSON before compression
        self._ratio: float | None = None  # wire bytes / JSON bytes of the last batch
        self.central_codec = CODEC_VERSION  # what central said it reads, this connection
        self._started = time.monotonic()
        self._stopping = False
        self.cert_expires_at: datetime | None = None
        # Called after a user push replaced credentials (drops cached sign-ins).
        self.on_users_replaced: Callable[[], None] | None = None
        if self._mqtt_cfg.tls and self._mqtt_cfg.cert is not None:
            self.cert_expires_at = certificate_expiry(self._mqtt_cfg.cert)
        self.blobs = BlobUploader(
            store,
            config.gateway.data_dir,
            gid,
            self._publish_blob,
            lambda: self.is_up,
            settings=self._mqtt_cfg,
            meter=self.meter,
        )

    # --- lifecycle -------------------------------------------------------------

    async def async_start(self) -> None:
        # Whatever was in flight when the process stopped goes again.
        requeued = await self._store.async_write(Requeue())
        if requeued:
            _LOGGER.info("%d unacknowledged envelopes queued again after restart", requeued)
        self._remove_listener = self._store.add_commit_listener(self._on_commit)
        self._tasks = [
            asyncio.create_task(self._async_drain(), name="uplink-drain"),
            asyncio.create_task(self._async_watch_acks(), name="uplink-ack-timeouts"),
            asyncio.create_task(self.blobs.async_run(), name="uplink-attachments"),
        ]
        await self._client.async_start()

    def _on_commit(self) -> None:
        self._wake.set()
        self.blobs.wake()

    async def async_stop(self) -> None:
        self._stopping = True
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._client.is_connected:
            # A clean stop says so itself; the last will covers the unclean ones.
            with contextlib.suppress(NotConnected, PublishFailed, TimeoutError):
                await asyncio.wait_for(self._async_publish_state("offline"), 2)
        await self._client.async_stop()

    # --- Backhaul seam for the LAN API -------------------------------------------

    @property
    def is_up(self) -> bool:
        return self._client.is_connected

    def status(self) -> dict[str, Any]:
        return {
            "link": "up" if self.is_up else "down",
            "since": (self._up_since or self._down_since).isoformat()
            if self.is_up
            else self._down_since.isoformat(),
            "last_sync": self._last_sync.isoformat() if self._last_sync else None,
            "bytes_sent": self.bytes_sent,
            "envelopes_sent": self.envelopes_sent,
            "attachment_bytes_sent": self.blobs.bytes_sent,
            "in_flight_batches": len(self._awaiting),
            "link_rate_bytes_per_s": round(self.meter.rate) if self.meter.rate else None,
            "link_rtt_s": round(self.meter.rtt, 3) if self.meter.rtt is not None else None,
            "keepalive_s": self._client.keepalive_s,
            "chunk_bytes": linkplan.chunk_bytes(self.meter, self._mqtt_cfg),
            "codec": self.central_codec,
            "broker": f"{self._mqtt_cfg.host}:{self._mqtt_cfg.port}",
            "last_error": self._client.last_error,
            "certificate_expires_at": self.cert_expires_at.isoformat()
            if self.cert_expires_at
            else None,
        }

    async def async_checkout(self, activity_id: str, username: str) -> CheckoutAnswer:
        """Ask central to check the activity out to ``username`` on this gateway.

        Raises :class:`BackhaulDownError` at once when the link is down and
        ``TimeoutError`` when central does not answer in time.
        """
        if not self.is_up:
            raise BackhaulDownError("no backhaul to central right now")
        request = CheckoutRequest(
            gateway_id=self.gateway_id,
            request_id=uuid.uuid4(),
            activity_id=activity_id,
            username=username,
        )
        fut: asyncio.Future[CheckoutAnswer] = asyncio.get_running_loop().create_future()
        self._checkouts[request.request_id] = fut
        try:
            try:
                await self._client.async_publish(
                    self._t_checkout,
                    encode(request),
                    qos=1,
                    response_topic=self._t_checkout_answer,
                    correlation_data=request.request_id.bytes,
                )
            except (NotConnected, PublishFailed) as exc:
                raise BackhaulDownError(str(exc)) from exc
            answer = await asyncio.wait_for(fut, self._mqtt_cfg.checkout_timeout_s)
        finally:
            self._checkouts.pop(request.request_id, None)
        if answer.ok and answer.activity is not None:
            activity = answer.activity
            await self._store.async_write(UpsertActivity(activity, username, _now()))
        return answer

    # --- connection events ------------------------------------------------------

    async def _async_on_connect(self, session_present: bool) -> None:
        self._drain_ready = False
        self._up_since = _now()
        _LOGGER.info(
            "backhaul up (%s, session %s)",
            self._mqtt_cfg.host,
            "resumed" if session_present else "new",
        )
        # Batches without a result go again: central answers duplicates with
        # their first outcome.
        self._forget_in_flight()
        self.central_codec = CODEC_VERSION  # until central says more on this connection
        try:
            await self._store.async_write(Requeue())
        finally:
            # A failed requeue is logged by the client; the drain must not stay shut
            # until the next reconnect because of it.
            self._drain_ready = True
        spread = self._mqtt_cfg.reconnect_spread_s
        if self._connects > 0 and spread > 0:
            # A reconnect after an outage: the whole fleet is coming back now. Start
            # draining at a random moment within the spread (the bridge resubscribes
            # meanwhile, and central meets the backlog spread out, not at once).
            self._hold(random.uniform(0, spread))
        self._connects += 1
        self._wake.set()
        self.blobs.on_link_up()
        await self._async_publish_state("online")
        await self.async_send_heartbeat()

    async def _async_on_disconnect(self) -> None:
        self._drain_ready = False
        self._down_since = _now()
        if not self._stopping:
            _LOGGER.warning("backhaul down; envelopes wait on disk until it returns")
        for fut in self._checkouts.values():
            if not fut.done():
                fut.set_exception(BackhaulDownError("the link to central dropped"))

    async def _async_publish_state(self, state: Literal["online", "offline"]) -> None:
        msg = GatewayState(
            gateway_id=self.gateway_id,
            state=state,
            at=_now(),
            version=__version__,
        )
        await self._client.async_publish(self._t_state, encode(msg), qos=1, retain=True)

    async def async_send_heartbeat(self) -> None:
        """Publish one heartbeat now (the scheduler calls this periodically)."""
        if self.heartbeat_source is None or not self.is_up:
            return
        beat = await self.heartbeat_source()
        payload = encode(beat)
        with contextlib.suppress(NotConnected, PublishFailed):
            await self._client.async_publish(self._t_heartbeat, payload, qos=0)
            self.bytes_sent += len(payload)

    def _publish_blob(self, payload: bytes) -> asyncio.Future[None]:
        acked = self._client.publish_nowait(self._t_blobs, payload, qos=1)
        self.bytes_sent += len(payload)
        return acked

    # --- draining the outbox -------------------------------------------------------

    def _forget_in_flight(self) -> None:
        self._awaiting.clear()
        self._by_envelope.clear()

    def _window_full(self) -> bool:
        return len(self._awaiting) + self._publishing >= self._mqtt_cfg.inflight_batches

    async def _async_drain(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while (
                self.is_up and self._drain_ready and not self._window_full() and not self._holding()
            ):
                batch_id = str(uuid.uuid4())
                max_bytes = linkplan.batch_max_bytes(self.meter, self._mqtt_cfg, self._ratio)
                claimed = await self._store.async_write(
                    ClaimBatch(batch_id, self._mqtt_cfg.batch_max_envelopes, max_bytes)
                )
                if not claimed:
                    break
                self._publishing += 1
                task = asyncio.create_task(
                    self._async_publish_batch(batch_id, claimed), name=f"uplink-batch:{batch_id}"
                )
                task.add_done_callback(self._batch_done)

    def _holding(self) -> bool:
        return time.monotonic() < self._hold_until

    def _hold(self, seconds: float) -> None:
        """Send no batch for ``seconds`` (at least), then drain again."""
        until = time.monotonic() + seconds
        if until > self._hold_until:
            self._hold_until = until
            asyncio.get_running_loop().call_later(seconds, self._wake.set)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._publishing -= 1
        if not task.cancelled() and task.exception() is not None:
            _LOGGER.error("publishing a batch failed: %s", task.exception())
        self._wake.set()

    async def _async_publish_batch(self, batch_id: str, claimed: list[Claimed]) -> None:
        ids = [c.envelope_id for c in claimed]
        # The bodies are canonical WireEnvelope JSON already: splice them into
        # the batch document rather than parsing and re-serialising each one.
        head = json.dumps(
            {"gateway_id": self.gateway_id, "batch_id": batch_id, "sent_at": _now().isoformat()}
        )
        envelopes_json = ",".join(c.body for c in claimed)
        document = f'{{"kind":"envelope_batch",{head[1:-1]},"envelopes":[{envelopes_json}]}}'
        payload = await self._async_encode_batch(document.encode())
        # No envelope-ids user property any more: central never read it, and
        # uncompressed it cost ~7 % of the uplink (the ids are in the body).
        try:
            await self._client.async_publish(self._t_envelopes, payload, qos=1)
        except (NotConnected, PublishFailed) as exc:
            _LOGGER.info("batch of %d not sent (%s); it waits for the link", len(ids), exc)
            await self._store.async_write(Requeue(tuple(ids)))
            return
        self.bytes_sent += len(payload)
        self.envelopes_sent += len(ids)
        batch = _Batch(batch_id, set(ids), linkplan.answer_timeout(self.meter, self._mqtt_cfg))
        self._awaiting[batch_id] = batch
        for eid in ids:
            self._by_envelope[eid] = batch_id
        await self._store.async_write(MarkSent(tuple(ids), _now()))

    async def _async_encode_batch(self, document: bytes) -> bytes:
        rate = self.meter.rate
        if self._mqtt_cfg.compression == "auto" and self.central_codec >= CODEC_ZSTD:
            # A thin link is worth zstd's strongest effort: 0.2-0.5 s per 256 KiB batch on
            # the loaded 2-core VM, against the seconds that batch takes on such a link.
            level = 19 if rate is not None and rate < SLOW_LINK_BYTES_PER_S else 9
            payload = await asyncio.get_running_loop().run_in_executor(
                None, encode_for_peer, document, self.central_codec, level
            )
        else:
            payload = encode_json(document)
        self.json_bytes_sent += len(document)
        self._ratio = len(payload) / len(document)
        return payload

    async def _async_watch_acks(self) -> None:
        """A batch without central's result in time goes again."""
        timeout = self._mqtt_cfg.ack_timeout_s
        while True:
            await asyncio.sleep(min(ACK_CHECK_INTERVAL, timeout / 2))
            now = time.monotonic()
            late = [b for b in self._awaiting.values() if now - b.sent_at > b.timeout]
            if not late:
                continue
            ids: list[str] = []
            for batch in late:
                self._awaiting.pop(batch.batch_id, None)
                for eid in batch.envelope_ids:
                    self._by_envelope.pop(eid, None)
                ids.extend(batch.envelope_ids)
            _LOGGER.warning(
                "no answer from central for %d envelopes in %.0fs; sending them again",
                len(ids),
                max(b.timeout for b in late),
            )
            await self._store.async_write(Requeue(tuple(ids)))
            # Unanswered again and again (central overloaded, or a storm of resends):
            # wait a growing, random while before resending, so a fleet spreads out.
            self._misses += 1
            if self._misses > 1:
                ceiling = min(self._mqtt_cfg.ack_timeout_max_s, timeout * 2 ** (self._misses - 2))
                self._hold(random.uniform(0, ceiling))
            self._wake.set()

    # --- downlink ---------------------------------------------------------------------

    async def _async_on_message(self, msg: Received) -> None:
        parsed = topics.parse(msg.topic)
        if parsed is None or parsed[0] != self.gateway_id:
            _LOGGER.warning("ignoring a message on unexpected topic %s", msg.topic[:200])
            return
        advertised = msg.user_properties.get(CODEC_PROPERTY, "")
        if advertised.isdigit():
            self.central_codec = min(int(advertised), CODEC_NEWEST)
        try:
            message = decode(msg.payload)
        except DecodeError as exc:
            _LOGGER.warning("ignoring an undecodable message on %s: %s", msg.topic, exc)
            return
        if getattr(message, "gateway_id", None) != self.gateway_id:
            _LOGGER.warning("ignoring a message for another gateway on %s", msg.topic)
            return
        if isinstance(message, EnvelopeResults):
            await self._async_on_results(message)
        elif isinstance(message, BatchDeferred):
            await self._async_on_deferred(message)
        elif isinstance(message, Dispatch):
            d = message
            taken = await self._store.async_write(
                UpsertActivity(d.activity, d.holder, d.dispatched_at, d.review, from_dispatch=True)
            )
            if not taken:
                _LOGGER.info("ignoring a dispatch of %s older than its check-in", d.activity.id)
            elif d.review is not None:
                _LOGGER.info(
                    "activity %s sent back to %s by central for round %d",
                    d.activity.id,
                    d.holder,
                    d.review.round,
                )
            else:
                _LOGGER.info("activity %s dispatched to %s", d.activity.id, d.holder)
        elif isinstance(message, Recall):
            r = message
            await self._store.async_write(RecallActivity(r.activity_id, r.reason, r.recalled_at))
            _LOGGER.info("activity %s recalled by central: %s", r.activity_id, r.reason)
        elif isinstance(message, UserPush):
            u = message
            ended = await self._store.async_write(ReplaceUsers(u))
            if self.on_users_replaced is not None:
                self.on_users_replaced()  # cached sessions end now too
            _LOGGER.info("users updated from central: %d users", len(u.users))
            if ended:
                _LOGGER.info("sessions ended by the user push: %s", ", ".join(ended))
        elif isinstance(message, BlobReceipt):
            self.blobs.on_receipt(message)
        elif isinstance(message, CheckoutAnswer):
            fut = self._checkouts.get(message.request_id)
            if fut is not None and not fut.done():
                fut.set_result(message)
        else:
            _LOGGER.warning("ignoring a %s message on %s", type(message).__name__, msg.topic)

    async def _async_on_deferred(self, message: BatchDeferred) -> None:
        """Central is busy: the batch goes again later, the uplink holds meanwhile."""
        batch = self._awaiting.pop(str(message.batch_id), None)
        # Jitter: the gateways central told at once do not come back at once.
        self._hold(message.retry_after_s * random.uniform(0.5, 1.5))
        if batch is None:
            return  # resent already, or answered
        ids = list(batch.envelope_ids)
        for eid in ids:
            self._by_envelope.pop(eid, None)
        _LOGGER.info(
            "central is busy: %d envelopes go again in about %.0f s",
            len(ids),
            message.retry_after_s,
        )
        await self._store.async_write(Requeue(tuple(ids)))

    async def _async_on_results(self, message: EnvelopeResults) -> None:
        self._misses = 0
        now = _now()
        await self._store.async_write(ApplyResults(tuple(message.results), now))
        self._last_sync = now
        for result in message.results:
            eid = str(result.envelope_id)
            batch_id = self._by_envelope.pop(eid, None)
            if batch_id is None:
                continue
            batch = self._awaiting.get(batch_id)
            if batch is not None:
                batch.envelope_ids.discard(eid)
                if not batch.envelope_ids:
                    del self._awaiting[batch_id]
            if result.outcome == "rejected":
                _LOGGER.warning(
                    "central rejected envelope %s (%s): %s", eid, result.code, result.reason
                )
        self._wake.set()


def uplink_ctx(uplink: Uplink) -> Callable[[web.Application], AsyncIterator[None]]:
    """Run ``uplink`` for the life of the app (a ``cleanup_ctx``)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        await uplink.async_start()
        try:
            yield
        finally:
            await uplink.async_stop()

    return ctx
