"""Attachment blobs go up to central in chunks, resuming where central stands.

Which blobs: complete ones referenced by an envelope that left ``stored``
(its activity is completed, rule 4), oldest first, not yet confirmed by
central and not refused by it, one blob at a time. How: ``BlobChunk``s
(QoS 1) from the length central last confirmed, pipelined: each is handed
to the socket without waiting for the one before's PUBACK, sized to the
measured link (:mod:`gateway.linkplan`) and sent while the bytes the
broker has not acknowledged stay within the send budget, so a long fat
pipe fills while a thin one never has more than about ``send_queue_s`` of
attachment data queued in front of an envelope. Each ``BlobReceipt`` says
how many bytes central holds *on disk*, and that number is committed here,
so a cut link, a restart or a lost receipt resumes from it rather than from
zero. A receipt with ``problem`` (central refuses the blob for good) is
kept and shown in ``/api/v1/status``; nothing is deleted on the gateway
either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway import linkplan
from gateway.config import GatewayMqttSection
from gateway.store.attachments import (
    NextBlobToUpload,
    Pending,
    RecordBlobError,
    RecordBlobReceipt,
)
from gateway.store.store import Store
from outpost.linkmeter import LinkMeter
from outpost.wire.codec import encode
from outpost.wire.schemas import BlobChunk, BlobReceipt

_LOGGER = logging.getLogger(__name__)

# Hands a payload to the socket now; the future resolves on its PUBACK.
Publish = Callable[[bytes], "asyncio.Future[None]"]
# Central silent (bridge down, broker up): retry after the receipt timeout,
# doubling up to this, so a metered link does not carry a window of chunks
# every half minute for hours.
MAX_RETRY_S = 900.0


def read_chunk(path: Path, offset: int, length: int) -> bytes:
    """Blocking: call from a thread."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read(length)


class BlobUploader:
    """Runs in the uplink's event loop; ``wake()`` when the link comes up or work appears."""

    def __init__(
        self,
        store: Store,
        data_dir: Path,
        gateway_id: str,
        publish: Publish,
        is_up: Callable[[], bool],
        *,
        settings: GatewayMqttSection,
        meter: LinkMeter,
    ) -> None:
        self._store = store
        self._data_dir = Path(data_dir)
        self._gateway_id = gateway_id
        self._publish = publish
        self._is_up = is_up
        self._cfg = settings
        self._meter = meter
        self._wake = asyncio.Event()
        self._link_up = asyncio.Event()  # a (re)connect ends a retry wait early
        self._misses = 0  # attempts in a row that got no receipt
        self._receipts: tuple[str, asyncio.Queue[BlobReceipt]] | None = None
        self.bytes_sent = 0  # chunk payloads published (for status)
        self.blobs_uploaded = 0
        self.last_chunk_bytes = 0  # for status: the size the link asked for last

    def wake(self) -> None:
        self._wake.set()

    def on_link_up(self) -> None:
        self._misses = 0
        self._link_up.set()
        self._wake.set()

    def on_receipt(self, receipt: BlobReceipt) -> None:
        receiving = self._receipts
        if receiving is not None and receiving[0] == receipt.sha256:
            receiving[1].put_nowait(receipt)
        # Otherwise a late answer about a blob no longer in hand: its next
        # chunk's receipt will say the same, so there is nothing to do.

    async def async_run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._is_up():
                job = await self._store.async_read(NextBlobToUpload())
                if job is None:
                    break
                if not await self._async_send(job):
                    # No receipt in time or the link dropped: wait for the
                    # next connect, or try again later (backing off).
                    if not self._is_up():
                        break
                    base = self._cfg.ack_timeout_s
                    delay = min(base * 2**self._misses, MAX_RETRY_S)
                    self._misses += 1
                    self._link_up.clear()
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows
                    # the stop's cancellation when the link comes up at that moment,
                    # and this loop would then wait for ever, holding up the stop.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._link_up.wait()

    async def _async_record(self, receipt: BlobReceipt) -> None:
        now = datetime.now(UTC)
        await self._store.async_write(RecordBlobReceipt(receipt, now))

    async def _async_local_error(self, job: Pending, problem: str) -> None:
        # Not central's refusal but ours: kept and shown the same way, so the
        # uploader moves on instead of retrying a file it cannot read.
        _LOGGER.error("attachment %s: %s", job.sha256[:12], problem)
        await self._store.async_write(RecordBlobError(job.sha256, problem))

    async def _async_read(self, job: Pending, offset: int, length: int) -> bytes | None:
        length = min(length, job.size - offset)
        try:
            data = await asyncio.get_running_loop().run_in_executor(
                None, read_chunk, self._data_dir / job.path, offset, length
            )
        except OSError as exc:
            await self._async_local_error(
                job, f"the gateway cannot read this attachment: {exc.strerror or exc}"
            )
            return None
        if len(data) != length:
            await self._async_local_error(
                job, "the attachment file on the gateway is shorter than recorded"
            )
            return None
        return data

    async def _async_send(self, job: Pending) -> bool:
        """Send ``job`` from where central stands; False when it must wait for later.

        Chunks go out in order (go-back-N): central appends a chunk only at
        its current length, so a receipt that does not say "up to the end of
        this chunk" means central stands elsewhere (a chunk went missing, or
        it already had more), and sending resumes from the length it named.
        Receipts for chunks sent before that are then stale: only the answer
        to the oldest chunk in flight counts.
        """
        receipts: asyncio.Queue[BlobReceipt] = asyncio.Queue()
        self._receipts = (job.sha256, receipts)
        try:
            return await self._async_send_window(job, receipts)
        finally:
            self._receipts = None

    def _room(self, in_flight_bytes: int, in_flight: int, length: int) -> bool:
        """May another chunk of ``length`` bytes go now?"""
        if in_flight >= self._cfg.blob_window:
            return False
        budget = linkplan.send_budget(self._meter, self._cfg)
        if in_flight and in_flight_bytes + length > 4 * budget:
            return False  # receipts lag the PUBACKs by central's fsync, not by more
        unacked = self._meter.unacked
        return unacked == 0 or unacked + length <= budget

    async def _async_next(
        self, receipts: asyncio.Queue[BlobReceipt], timeout: float, budget_bound: bool
    ) -> BlobReceipt | None:
        """The next receipt; None when only the send budget opened up (or on timeout)."""
        with contextlib.suppress(asyncio.QueueEmpty):
            return receipts.get_nowait()
        get = asyncio.ensure_future(receipts.get())
        waits: set[asyncio.Future[Any]] = {get}
        if budget_bound:
            waits.add(asyncio.ensure_future(self._meter.async_changed(timeout)))
        try:
            done, _ = await asyncio.wait(
                waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for w in waits:
                if not w.done():
                    w.cancel()
        if get in done:
            return get.result()
        return None

    async def _async_send_window(self, job: Pending, receipts: asyncio.Queue[BlobReceipt]) -> bool:
        loop = asyncio.get_running_loop()
        # Central confirmed every byte but not completion (it stopped before
        # hashing): any chunk makes it finish, so start from the top.
        next_offset = job.uploaded if job.uploaded < job.size else 0
        in_flight: deque[tuple[int, int]] = deque()  # (offset, end) in send order
        in_flight_bytes = 0
        heard = loop.time()  # last receipt (or the start)
        while True:
            budget_bound = False
            while next_offset < job.size and self._is_up():
                length = min(linkplan.chunk_bytes(self._meter, self._cfg), job.size - next_offset)
                if not self._room(in_flight_bytes, len(in_flight), length):
                    budget_bound = len(in_flight) < self._cfg.blob_window
                    break
                data = await self._async_read(job, next_offset, length)
                if data is None:
                    return True
                chunk = BlobChunk(
                    gateway_id=self._gateway_id,
                    sha256=job.sha256,
                    size=job.size,
                    offset=next_offset,
                    data=data,
                )
                payload = await loop.run_in_executor(None, encode, chunk)  # zlib: CPU
                try:
                    acked = self._publish(payload)
                except ConnectionError as exc:
                    _LOGGER.info("attachment %s waits for the link (%s)", job.sha256[:12], exc)
                    return False
                # A PUBACK lost to a dropped link shows as the link being down.
                acked.add_done_callback(_consume)
                self.bytes_sent += len(payload)
                self.last_chunk_bytes = len(data)
                _LOGGER.debug(
                    "chunk %s@%d+%d sent; unacked %d, budget %d, awaiting receipts %d",
                    job.sha256[:8],
                    next_offset,
                    len(data),
                    self._meter.unacked,
                    linkplan.send_budget(self._meter, self._cfg),
                    len(in_flight) + 1,
                )
                in_flight.append((next_offset, next_offset + len(data)))
                in_flight_bytes += len(data)
                next_offset += len(data)
            if not self._is_up():
                return False
            if not in_flight:
                return False  # every byte sent and confirmed, yet not complete: ask later
            timeout = linkplan.answer_timeout(self._meter, self._cfg)
            left = heard + timeout - loop.time()
            if left <= 0:
                _LOGGER.info("attachment %s: no receipt from central yet", job.sha256[:12])
                return False
            receipt = await self._async_next(receipts, left, budget_bound)
            if receipt is None:
                continue  # the budget opened up (or time to look at the clock)
            heard = loop.time()
            self._misses = 0  # central answers
            if receipt.complete or receipt.problem:
                await self._async_record(receipt)
                if receipt.complete:
                    self.blobs_uploaded += 1
                    _LOGGER.info(
                        "attachment %s (%d bytes) is at central", job.sha256[:12], job.size
                    )
                else:
                    _LOGGER.warning(
                        "central refused attachment %s: %s", job.sha256[:12], receipt.problem
                    )
                return True
            offset, end = in_flight[0]
            if receipt.offset is not None and receipt.offset != offset:
                continue  # the answer to a chunk sent before the last resync
            in_flight.popleft()
            in_flight_bytes -= end - offset
            await self._async_record(receipt)  # central's length, committed before going on
            if receipt.received != end:
                in_flight.clear()
                in_flight_bytes = 0
                next_offset = receipt.received


def _consume(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()
