"""Attachment blobs central holds: ``<data_dir>/blobs/<aa>/<sha256>``, content-addressed.

A gateway sends a blob one ``BlobChunk`` at a time, starting where central's
last receipt said it stood, and sends again when a receipt is slow; so a
chunk may come twice, late, or from a gateway that rewound. A chunk is
therefore written only when it starts exactly where the partial file
``blobs/partial/<sha256>.part`` ends; anything else is answered with that
length, and the gateway continues from there. Every write is flushed and
fsynced before the answer, so a length central confirms is on disk and a
crash can only make central ask for bytes again, never lose confirmed ones.

When the last byte is in, the whole file is hashed: a match is renamed into
place and its directory fsynced, a mismatch is deleted. The final file is
the proof central holds a blob, whichever gateway sent it.

Every method here blocks (file IO, hashing): call them from a thread, and
one at a time per SHA-256 (the uplink handler holds a lock per blob).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from outpost.files import commit_verified, fsync_dir
from outpost.wire.schemas import SHA256_RE

logger = logging.getLogger(__name__)

MIB = 1024 * 1024

HASH_MISMATCH = "the attachment's content does not match its SHA-256"


@dataclass(frozen=True)
class Progress:
    """Where one blob stands after a chunk: what the receipt says, and what happened."""

    received: int  # bytes central holds on disk
    complete: bool = False  # the final file is in place (held already, or just stored)
    problem: str | None = None  # refused for good: a sentence for the gateway's operator
    refusal: str | None = None  # the refusal as a short code (metrics, logs)
    written: int = 0  # bytes this chunk added
    stored: bool = False  # this chunk completed the blob


def too_large(size: int, limit: int) -> str:
    return (
        f"the attachment is {size / MIB:.1f} MiB ({size} bytes), larger than the "
        f"{limit / MIB:.1f} MiB ({limit} bytes) central accepts"
    )


class BlobStore:
    def __init__(self, data_dir: Path, max_bytes: int) -> None:
        self.root = Path(data_dir) / "blobs"
        self.partial_dir = self.root / "partial"
        self.max_bytes = max_bytes

    @staticmethod
    def _check(sha256: str) -> None:
        # The SHA-256 becomes a file name: never let anything else near the path.
        if not SHA256_RE.fullmatch(sha256):
            raise ValueError(f"not a SHA-256 in lowercase hex: {sha256[:80]!r}")

    def path_of(self, sha256: str) -> Path:
        """Where the complete blob is (or will be); safe in the event loop (no IO)."""
        self._check(sha256)
        return self.root / sha256[:2] / sha256

    def partial_of(self, sha256: str) -> Path:
        self._check(sha256)
        return self.partial_dir / f"{sha256}.part"

    def size_held(self, sha256: str) -> int | None:
        """The size of the complete blob, or None when central does not hold it."""
        try:
            return self.path_of(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def partial_length(self, sha256: str) -> int:
        try:
            return self.partial_of(sha256).stat().st_size
        except FileNotFoundError:
            return 0

    def discard(self, sha256: str) -> None:
        self.partial_of(sha256).unlink(missing_ok=True)

    def receive(self, sha256: str, size: int, offset: int, data: bytes) -> Progress:
        """Take one chunk: ``data`` at ``offset`` of a blob of ``size`` bytes."""
        held = self.size_held(sha256)
        if held is not None:
            return Progress(received=held, complete=True)
        if size > self.max_bytes:
            self.discard(sha256)
            return Progress(0, problem=too_large(size, self.max_bytes), refusal="too_large")
        current = self.partial_length(sha256)
        if current > size:
            # Left by chunks that claimed another size; the hash would refuse it anyway.
            logger.warning(
                "attachment %s: partial file of %d bytes exceeds the size %d now given; "
                "starting again",
                sha256[:12],
                current,
                size,
            )
            self.discard(sha256)
            current = 0
        if current == size:
            # Every byte was fsynced but the hash never ran (stopped in between).
            return self._finish(sha256, size, written=0)
        if offset != current:
            if current:
                # Bytes a stopped bridge wrote but never fsynced would count otherwise.
                self._sync(sha256)
            return Progress(received=current)
        current = self._append(sha256, data)
        if current < size:
            return Progress(received=current, written=len(data))
        return self._finish(sha256, size, written=len(data))

    def _append(self, sha256: str, data: bytes) -> int:
        path = self.partial_of(sha256)
        created = not path.exists()
        if created:
            self.partial_dir.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            length = fh.tell()
        if created:
            fsync_dir(self.partial_dir)  # the new file's name is durable too
        return length

    def _sync(self, sha256: str) -> None:
        with open(self.partial_of(sha256), "rb") as fh:
            os.fsync(fh.fileno())

    def _finish(self, sha256: str, size: int, written: int) -> Progress:
        if not commit_verified(self.partial_of(sha256), sha256, self.path_of(sha256)):
            return Progress(0, problem=HASH_MISMATCH, refusal="hash_mismatch", written=written)
        return Progress(received=size, complete=True, written=written, stored=True)
