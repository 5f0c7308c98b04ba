"""What the bridge does with one uplink message, independent of the MQTT client.

:meth:`UplinkHandler.async_handle` takes a received message and returns the
messages to publish in answer. Database work runs in the DB threads and is
committed before this returns, so an answer never leaves before its commit.

Attachment chunks (``up/blobs``) go to the :class:`BlobStore` in its own
threads (fsync and hashing must not hold up envelope replay), one chunk at a
time per blob; the receipt leaves only after the bytes are fsynced and, for a
complete blob, its row committed.

A payload that cannot be decoded, fails the schema, arrives on the wrong
leaf, or names a gateway other than its topic's is logged with its topic
(truncated), noted on that gateway's row for the fleet view, and dropped:
nothing else waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from cloud_bridge import blob_lock, fleet, rejections, rules
from cloud_bridge.blobs import BlobStore, Progress
from cloud_bridge.db import Database
from cloud_bridge.dbrunner import DbRunner
from cloud_bridge.errors import CentralError
from cloud_bridge.groupcommit import Busy, GroupCommitter
from cloud_bridge.heartbeats import HeartbeatCommitter
from cloud_bridge.intake import Intake, read_batch
from cloud_bridge.ledger import clip
from cloud_bridge.metrics import BridgeMetrics
from cloud_bridge.models import Blob, Gateway, utcnow
from cloud_bridge.replay import Results, make_part
from outpost.locks import KeyedLocks
from outpost.mqtt import Received
from outpost.wire import topics
from outpost.wire.codec import MAX_BYTES, DecodeError, decode
from outpost.wire.schemas import (
    MAX_BATCH_ENVELOPES,
    BatchDeferred,
    BlobChunk,
    BlobReceipt,
    CheckoutAnswer,
    CheckoutRequest,
    EnvelopeBatch,
    EnvelopeResults,
    GatewayState,
    Heartbeat,
    UserPush,
)

logger = logging.getLogger(__name__)

TOPIC_LOG_MAX = 200
BLOB_THREADS = 2
DECODE_THREADS = 2
# A payload this small (a heartbeat, a batch of a few envelopes) is decoded on the event
# loop: ~40 us of work, where handing it to a decode thread and back cost twice that in
# thread wakeups (profiled under a saturated fleet, docs/benchmarks.md). Larger ones
# still go to the decode threads, so a big batch never holds up the loop.
INLINE_DECODE_MAX = 2048
# ... and what it may inflate to and still be read there: 2 KiB of zstd can hold
# megabytes of JSON (a hostile gateway's); those go to the decode threads too.
INLINE_INFLATED_MAX = 64 * 1024
SUMMARY_S = 60.0  # replay's summary line in the log

# Which message kind each uplink leaf carries.
_EXPECTED: dict[str, type[Any]] = {
    topics.UP_ENVELOPES: EnvelopeBatch,
    topics.UP_CHECKOUT: CheckoutRequest,
    topics.UP_HEARTBEAT: Heartbeat,
    topics.STATE: GatewayState,
    topics.UP_BLOBS: BlobChunk,
}


@dataclass(frozen=True)
class Outgoing:
    """A message to publish (QoS 1) in answer to an uplink message."""

    topic: str
    message: Any
    correlation_data: bytes | None = None


def short(topic: str) -> str:
    return topic if len(topic) <= TOPIC_LOG_MAX else topic[:TOPIC_LOG_MAX] + "…"


def results_messages(results: Results, batch_id: Any = None) -> list[Outgoing]:
    """Group results by gateway into EnvelopeResults messages for ``down/results``."""
    by_gateway: dict[str, list[Any]] = {}
    for gateway_id, result in results:
        by_gateway.setdefault(gateway_id, []).append(result)
    out: list[Outgoing] = []
    for gateway_id, items in by_gateway.items():
        for i in range(0, len(items), MAX_BATCH_ENVELOPES):
            out.append(
                Outgoing(
                    topics.topic(gateway_id, topics.DOWN_RESULTS),
                    EnvelopeResults(
                        gateway_id=gateway_id,
                        batch_id=batch_id,
                        results=items[i : i + MAX_BATCH_ENVELOPES],
                    ),
                )
            )
    return out


class ReplaySummary:
    """What replay did since the last line in the log: one line per ``every_s``."""

    def __init__(self, every_s: float = SUMMARY_S) -> None:
        self.every_s = every_s
        self._since = time.monotonic()
        self._last = float("-inf")  # the first batch is logged at once
        self._batches = self._envelopes = self._rejected = 0
        self._gateways: set[str] = set()

    def add(self, gateway_id: str, envelopes: int, rejected: int) -> None:
        self._batches += 1
        self._envelopes += envelopes
        self._rejected += rejected
        self._gateways.add(gateway_id)
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        logger.info(
            "replayed %d batches (%d envelopes, %d rejected) from %d gateways in %.0f s",
            self._batches,
            self._envelopes,
            self._rejected,
            len(self._gateways),
            now - self._since,
        )
        self._last = self._since = now
        self._batches = self._envelopes = self._rejected = 0
        self._gateways.clear()


class UplinkHandler:
    def __init__(
        self,
        runner: DbRunner,
        committer: GroupCommitter,
        metrics: BridgeMetrics | None = None,
        *,
        blobs: BlobStore,
        history_every_s: float = fleet.HISTORY_EVERY_S,
    ) -> None:
        self.runner = runner
        self.history_every_s = history_every_s
        self.committer = committer
        self.metrics = metrics or BridgeMetrics()
        self.blobs = blobs
        self.heartbeats = HeartbeatCommitter(
            runner, record_heartbeat, history_every_s=history_every_s, metrics=self.metrics
        )
        self._summary = ReplaySummary()
        self.dropped = 0  # payloads refused (for tests and metrics)
        self.blob_locks = KeyedLocks()
        self._blob_io = ThreadPoolExecutor(BLOB_THREADS, thread_name_prefix="central-blobs")
        self._decode = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="central-decode")

    def shutdown(self) -> None:
        """Wait for attachment writes in progress, then stop their threads (blocking)."""
        self._blob_io.shutdown(wait=True, cancel_futures=True)
        self._decode.shutdown(wait=True, cancel_futures=True)

    async def async_handle(self, msg: Received) -> list[Outgoing]:
        parsed = topics.parse(msg.topic)
        if parsed is None:
            logger.warning("dropping a message on a topic that is not ours: %s", short(msg.topic))
            self.dropped += 1
            self.metrics.dropped.labels("foreign_topic").inc()
            return []
        gateway_id, leaf = parsed
        arrived = datetime.fromtimestamp(msg.received_at, UTC)
        expected = _EXPECTED.get(leaf)
        if expected is None:
            return await self._async_drop(
                gateway_id, msg.topic, f"unknown topic leaf {leaf!r}", "unknown_leaf"
            )
        limit = MAX_BYTES[expected.model_fields["kind"].default]
        read = read_inline(msg.payload, limit)
        if read is None:
            # Inflating and validating a large payload: in threads of its own, not on the
            # event loop the admin API and every gateway's answers share.
            loop = asyncio.get_running_loop()
            read = await loop.run_in_executor(
                self._decode, read_payload, msg.payload, limit, leaf, arrived
            )
        if isinstance(read, Intake):
            if read.batch.gateway_id != gateway_id:
                return await self._async_drop(
                    gateway_id,
                    msg.topic,
                    f"payload names gateway {read.batch.gateway_id!r} but arrived on "
                    f"the topic of {gateway_id!r}",
                    "wrong_gateway",
                )
            return await self._async_batch(gateway_id, read, arrived)
        if isinstance(read, DecodeError):
            return await self._async_drop(
                gateway_id, msg.topic, f"undecodable payload: {read}", "undecodable"
            )
        message = read
        if not isinstance(message, expected):
            return await self._async_drop(
                gateway_id,
                msg.topic,
                f"a {getattr(message, 'kind', '?')!r} message does not belong on {leaf!r}",
                "wrong_kind",
            )
        if message.gateway_id != gateway_id:
            return await self._async_drop(
                gateway_id,
                msg.topic,
                f"payload names gateway {message.gateway_id!r} but arrived on the topic of "
                f"{gateway_id!r}",
                "wrong_gateway",
            )
        if isinstance(message, EnvelopeBatch):
            return await self._async_batch(gateway_id, Intake(message), arrived)
        if isinstance(message, BlobChunk):
            return await self._async_blob_chunk(gateway_id, message)
        if isinstance(message, CheckoutRequest):
            self.metrics.checkouts.inc()
            return await self._async_checkout(gateway_id, message, msg)
        if isinstance(message, Heartbeat):
            if await self.heartbeats.async_record(message, arrived):
                self.metrics.heartbeats.inc()
            return []
        assert isinstance(message, GatewayState)
        went_online = await self.runner.async_tx(lambda s: record_state(s, message))
        self.metrics.state_messages.labels(message.state).inc()
        if went_online:
            push, held = await self.runner.async_tx(
                lambda s: (rules.user_push(s, gateway_id), rules.dispatches_held_by(s, gateway_id))
            )
            down = topics.topic(gateway_id, topics.DOWN_DISPATCH)
            return [
                Outgoing(topics.topic(gateway_id, topics.DOWN_USERS), push),
                *(Outgoing(down, d) for d in held),
            ]
        return []

    async def _async_drop(
        self, gateway_id: str, topic: str, problem: str, kind: str = "other"
    ) -> list[Outgoing]:
        self.dropped += 1
        self.metrics.dropped.labels(kind).inc()
        logger.warning("dropping a message on %s: %s", short(topic), problem[:500])
        await self.runner.async_tx(lambda s: note_error(s, gateway_id, problem))
        return []

    async def _async_batch(
        self, gateway_id: str, intake: Intake, arrived: datetime
    ) -> list[Outgoing]:
        batch = intake.batch
        try:
            results = await self.committer.async_apply(
                make_part(gateway_id, batch, intake.refused, arrived)
            )
        except Busy as busy:
            # Shed load with an answer: the gateway holds off instead of timing out
            # and resending into the same queue.
            logger.info("batch %s from %s deferred: %s", batch.batch_id, gateway_id, busy)
            deferred = BatchDeferred(
                gateway_id=gateway_id, batch_id=batch.batch_id, retry_after_s=busy.retry_after_s
            )
            return [Outgoing(topics.topic(gateway_id, topics.DOWN_RESULTS), deferred)]
        except Exception as exc:
            # Nothing was committed; the gateway sends the batch again. Say so on its row.
            problem = f"batch {batch.batch_id} could not be applied yet: {exc.__class__.__name__}"
            with contextlib.suppress(Exception):
                await self.runner.async_tx(lambda s: note_error(s, gateway_id, problem))
            raise
        rejected = sum(1 for _, r in results if r.outcome == "rejected")
        self.metrics.batches.inc()
        if rejected:
            self.metrics.rejected_envelopes.inc(rejected)
        if len(results) > rejected:
            self.metrics.applied_envelopes.inc(len(results) - rejected)
        # One line per batch is a thousand a second at a fleet's rate (measured: 8 % of
        # the event loop at 200 gateways): at info, a batch with rejections and a summary
        # a minute (the first batch at once).
        self._summary.add(gateway_id, len(results), rejected)
        logger.log(
            logging.INFO if rejected else logging.DEBUG,
            "batch %s from %s: %d envelopes, %d results (%d rejected)",
            batch.batch_id,
            gateway_id,
            len(batch.envelopes),
            len(results),
            rejected,
        )
        problems = [
            f"envelope {r.envelope_id} of activity {r.activity_id} rejected {r.code}: {r.reason}"
            for _, r in results
            if r.code in rejections.UNAPPLICABLE
        ]
        for problem in intake.unanswerable:
            self.dropped += 1
            self.metrics.dropped.labels("invalid_envelope").inc()
            logger.warning("dropping an envelope from %s: %s", gateway_id, problem[:500])
            problems.append(problem)
        if problems:
            note = problems[0]
            if len(problems) > 1:
                note = (
                    f"{len(problems)} envelopes of batch {batch.batch_id} were not applied; "
                    f"the first: {note}"
                )
            await self.runner.async_tx(lambda s: note_error(s, gateway_id, note))
        return results_messages(results, batch.batch_id)

    async def _async_blob_chunk(self, gateway_id: str, chunk: BlobChunk) -> list[Outgoing]:
        loop = asyncio.get_running_loop()
        sha = chunk.sha256
        async with self.blob_locks.async_hold(sha):
            progress: Progress = await loop.run_in_executor(
                self._blob_io, receive_chunk, self.runner.db, self.blobs, gateway_id, chunk
            )
        if progress.written:
            self.metrics.blob_bytes.inc(progress.written)
        if progress.stored:
            self.metrics.blobs.inc()
            logger.info(
                "attachment %s (%d bytes) from %s is stored",
                sha[:12],
                progress.received,
                gateway_id,
            )
        if progress.problem is not None:
            self.metrics.blobs_refused.labels(progress.refusal or "other").inc()
            problem = f"attachment {sha} refused: {progress.problem}"
            logger.warning("%s (from %s)", problem, gateway_id)
            await self.runner.async_tx(lambda s: note_error(s, gateway_id, problem))
        receipt = BlobReceipt(
            gateway_id=gateway_id,
            sha256=sha,
            received=progress.received,
            complete=progress.complete,
            problem=progress.problem,
            offset=chunk.offset,
        )
        return [Outgoing(topics.topic(gateway_id, topics.DOWN_BLOBS), receipt)]

    async def _async_checkout(
        self, gateway_id: str, request: CheckoutRequest, msg: Received
    ) -> list[Outgoing]:
        def work(session: Session) -> CheckoutAnswer:
            try:
                _, wire = rules.gateway_check_out(
                    session, request.activity_id, gateway_id, request.username
                )
            except CentralError as exc:
                return CheckoutAnswer(
                    gateway_id=gateway_id,
                    request_id=request.request_id,
                    ok=False,
                    code=exc.code,
                    reason=exc.message,
                )
            return CheckoutAnswer(
                gateway_id=gateway_id, request_id=request.request_id, ok=True, activity=wire
            )

        answer = await self.runner.async_tx(work)
        logger.info(
            "check-out of %s to %s for %s: %s",
            request.activity_id,
            gateway_id,
            request.username,
            "granted" if answer.ok else answer.code,
        )
        reply_to = topics.topic(gateway_id, topics.DOWN_CHECKOUT)
        # Honour an MQTT 5 response topic, but only inside the asking gateway's downlink.
        own_down = topics.topic(gateway_id, "down/")
        if msg.response_topic and msg.response_topic.startswith(own_down):
            reply_to = msg.response_topic
        return [Outgoing(reply_to, answer, msg.correlation_data)]


def read_inline(payload: bytes, limit: int) -> Any | None:
    """A small payload's message, read on the event loop at a bounded cost.

    None when it must go to the decode threads: it is large, inflates past
    ``INLINE_INFLATED_MAX``, or is refused (the threads read it again in full,
    with its batch-mates' rescue and its error, :func:`read_payload`).
    """
    if len(payload) > INLINE_DECODE_MAX:
        return None
    try:
        return decode(payload, min(limit, INLINE_INFLATED_MAX))
    except DecodeError:
        return None


def read_payload(
    payload: bytes, limit: int, leaf: str, arrived: datetime
) -> Any | Intake | DecodeError:
    """The decoded message; for an envelope batch with a bad envelope, the batch read
    envelope by envelope (:func:`read_batch`); the DecodeError when neither (blocking)."""
    try:
        return decode(payload, limit)
    except DecodeError as exc:
        if leaf == topics.UP_ENVELOPES:
            # One envelope out of the contract must not cost its batch-mates.
            try:
                return read_batch(payload, arrived, limit)
            except DecodeError:
                pass
        return exc


# --- gateway bookkeeping (blocking, DB threads) -----------------------------------


def note_error(session: Session, gateway_id: str, problem: str) -> None:
    gw = rules.touch_gateway(session, gateway_id)
    gw.last_error = clip(problem)
    gw.last_error_at = utcnow()


def receive_chunk(db: Database, blobs: BlobStore, gateway_id: str, chunk: BlobChunk) -> Progress:
    """Write one chunk under the blob's lock across workers (blob thread, blocking)."""
    sha = chunk.sha256
    with blob_lock.held(db, blobs.partial_dir, sha):
        progress = blobs.receive(sha, chunk.size, chunk.offset, chunk.data)
        if progress.complete:
            # Also when the file was there already: a stop between the rename and
            # this commit left it without its row.
            with db.session() as session:
                record_blob(session, sha, progress.received, gateway_id)
    return progress


def record_blob(session: Session, sha256: str, size: int, gateway_id: str) -> None:
    """Note a blob whose file is in place (the first gateway to complete it is kept)."""
    if session.get(Blob, sha256) is None:
        session.add(Blob(sha256=sha256, size=size, gateway_id=gateway_id, received_at=utcnow()))
        session.flush()


def record_heartbeat(
    session: Session,
    hb: Heartbeat,
    history_every_s: float = fleet.HISTORY_EVERY_S,
    now: datetime | None = None,
) -> None:
    """Keep ``hb`` on its gateway's row (and history); ``now``: when central received it."""
    now = now or utcnow()
    gw = rules.touch_gateway(session, hb.gateway_id, now, flush=False)
    if gw.state != "online":
        # A heartbeat proves the gateway is up even if its state message was missed.
        fleet.note_state(
            session,
            gw,
            GatewayState(gateway_id=hb.gateway_id, state="online", at=hb.sent_at),
            now,
        )
    fleet.note_heartbeat(session, gw, hb, now, history_every_s=history_every_s)


def record_state(session: Session, state: GatewayState) -> bool:
    """Record ``online``/``offline``; True when the gateway (re)appeared online."""
    now = utcnow()
    gw: Gateway = rules.touch_gateway(session, state.gateway_id, now)
    fleet.note_state(session, gw, state, now)
    return state.state == "online"


def push_for_all(session: Session) -> list[UserPush]:
    """A user snapshot for every known gateway (after users or types changed)."""
    return [rules.user_push(session, gid) for gid in rules.known_gateways(session)]
