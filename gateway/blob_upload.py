"""Attachment blobs go up to central in chunks, resuming where central stands.

Which blobs: complete ones referenced by an envelope that left ``stored``
(its activity is completed, rule 4), oldest first, not yet confirmed by
central and not refused by it, one blob at a time. How: ``BlobChunk``s
(QoS 1) from the length central last confirmed, up to ``mqtt.blob_window``
in flight; each ``BlobReceipt`` says how many bytes central holds *on
disk*, and that number is committed here, so a cut link, a restart or a
lost receipt resumes from it rather than from zero. A small window fills a
long-RTT link without crowding envelope batches off a thin one. A receipt
with ``problem`` (central refuses the blob for good) is kept and shown in
``/api/v1/status``; nothing is deleted on the gateway either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, and_, func, select, update

from gateway.store.schema import STORED, attachments, envelope_attachments, envelopes
from gateway.store.store import Store
from outpost.wire.codec import encode
from outpost.wire.schemas import BlobChunk, BlobReceipt

_LOGGER = logging.getLogger(__name__)

Publish = Callable[[bytes], Awaitable[None]]
# Central silent (bridge down, broker up): retry after the receipt timeout,
# doubling up to this, so a metered link does not carry a window of chunks
# every half minute for hours.
MAX_RETRY_S = 900.0


@dataclass(frozen=True)
class Pending:
    sha256: str
    size: int
    uploaded: int
    path: str


_referenced = (
    select(envelope_attachments.c.sha256)
    .join(envelopes, envelopes.c.envelope_id == envelope_attachments.c.envelope_id)
    .where(envelope_attachments.c.sha256 == attachments.c.sha256, envelopes.c.state != STORED)
    .exists()
)
_TO_UPLOAD = and_(
    attachments.c.complete.is_(True),
    attachments.c.uploaded_at.is_(None),
    attachments.c.upload_error.is_(None),
    _referenced,
)


def next_pending(conn: Connection) -> Pending | None:
    row = conn.execute(
        select(attachments.c.sha256, attachments.c.size, attachments.c.uploaded, attachments.c.path)
        .where(_TO_UPLOAD)
        .order_by(attachments.c.completed_at)
        .limit(1)
    ).first()
    return None if row is None else Pending(row.sha256, row.size, row.uploaded, row.path)


def upload_counts(conn: Connection) -> dict[str, Any]:
    """For ``/api/v1/status``: what still has to go up, and what central refused."""
    waiting, waiting_bytes = conn.execute(
        select(
            func.count(), func.coalesce(func.sum(attachments.c.size - attachments.c.uploaded), 0)
        )
        .select_from(attachments)
        .where(_TO_UPLOAD)
    ).one()
    refused = conn.execute(
        select(attachments.c.sha256, attachments.c.upload_error)
        .where(attachments.c.upload_error.is_not(None))
        .order_by(attachments.c.completed_at.desc())
        .limit(20)
    ).all()
    return {
        "to_upload": int(waiting),
        "to_upload_bytes": int(waiting_bytes),
        "refused": [{"sha256": r.sha256, "reason": r.upload_error} for r in refused],
    }


def record_receipt(conn: Connection, receipt: BlobReceipt, at: datetime) -> None:
    values: dict[str, Any] = {"uploaded": receipt.received}
    if receipt.complete:
        values["uploaded_at"] = at
    elif receipt.problem:
        values["upload_error"] = receipt.problem
    conn.execute(update(attachments).where(attachments.c.sha256 == receipt.sha256).values(values))


def record_local_error(conn: Connection, sha256: str, problem: str) -> None:
    conn.execute(
        update(attachments).where(attachments.c.sha256 == sha256).values(upload_error=problem)
    )


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
        chunk_bytes: int,
        window: int,
        receipt_timeout_s: float,
    ) -> None:
        self._store = store
        self._data_dir = Path(data_dir)
        self._gateway_id = gateway_id
        self._publish = publish
        self._is_up = is_up
        self._chunk = chunk_bytes
        self._window = window
        self._timeout = receipt_timeout_s
        self._wake = asyncio.Event()
        self._link_up = asyncio.Event()  # a (re)connect ends a retry wait early
        self._misses = 0  # attempts in a row that got no receipt
        self._receipts: tuple[str, asyncio.Queue[BlobReceipt]] | None = None
        self.bytes_sent = 0  # chunk payloads published (for status)
        self.blobs_uploaded = 0

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
                job = await self._store.async_read(next_pending)
                if job is None:
                    break
                if not await self._async_send(job):
                    # No receipt in time or the link dropped: wait for the
                    # next connect, or try again later (backing off).
                    if not self._is_up():
                        break
                    delay = min(self._timeout * 2**self._misses, MAX_RETRY_S)
                    self._misses += 1
                    self._link_up.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._link_up.wait(), delay)

    async def _async_record(self, receipt: BlobReceipt) -> None:
        now = datetime.now(UTC)
        await self._store.async_write(lambda c: record_receipt(c, receipt, now))

    async def _async_local_error(self, job: Pending, problem: str) -> None:
        # Not central's refusal but ours: kept and shown the same way, so the
        # uploader moves on instead of retrying a file it cannot read.
        _LOGGER.error("attachment %s: %s", job.sha256[:12], problem)
        await self._store.async_write(lambda c: record_local_error(c, job.sha256, problem))

    async def _async_read(self, job: Pending, offset: int) -> bytes | None:
        length = min(self._chunk, job.size - offset)
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

        Up to ``window`` chunks in flight, in order (go-back-N): central
        appends a chunk only at its current length, so a receipt that does
        not say "up to the end of this chunk" means central stands elsewhere
        (a chunk went missing, or it already had more), and sending resumes
        from the length it named. Receipts for chunks sent before that are
        then stale: only the answer to the oldest chunk in flight counts.
        """
        receipts: asyncio.Queue[BlobReceipt] = asyncio.Queue()
        self._receipts = (job.sha256, receipts)
        try:
            return await self._async_send_window(job, receipts)
        finally:
            self._receipts = None

    async def _async_send_window(self, job: Pending, receipts: asyncio.Queue[BlobReceipt]) -> bool:
        loop = asyncio.get_running_loop()
        # Central confirmed every byte but not completion (it stopped before
        # hashing): any chunk makes it finish, so start from the top.
        next_offset = job.uploaded if job.uploaded < job.size else 0
        in_flight: deque[tuple[int, int]] = deque()  # (offset, end) in send order
        while True:
            while next_offset < job.size and len(in_flight) < self._window:
                data = await self._async_read(job, next_offset)
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
                    await self._publish(payload)
                except ConnectionError as exc:
                    _LOGGER.info("attachment %s waits for the link (%s)", job.sha256[:12], exc)
                    return False
                self.bytes_sent += len(payload)
                in_flight.append((next_offset, next_offset + len(data)))
                next_offset += len(data)
            if not in_flight:
                return False  # every byte sent and confirmed, yet not complete: ask later
            try:
                receipt = await asyncio.wait_for(receipts.get(), self._timeout)
            except TimeoutError:
                _LOGGER.info("attachment %s: no receipt from central yet", job.sha256[:12])
                return False
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
            await self._async_record(receipt)  # central's length, committed before going on
            if receipt.received != end:
                in_flight.clear()
                next_offset = receipt.received
