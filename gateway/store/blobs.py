"""Attachment blobs on disk: ``data_dir/blobs/<aa>/<sha256>``, content-addressed.

Uploads land in ``blobs/partial/<sha256>.part``; every chunk is fsynced
before the database records how much arrived, so the received length the
gateway reports is always on disk. A blob counts only once its SHA-256 was
verified; then it is renamed into place and the directory fsynced.
All methods block: call them from a thread.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import BinaryIO

from outpost.files import commit_verified

CHUNK = 256 * 1024


class BlobFiles:
    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "blobs"
        self.partial_dir = self.root / "partial"

    def ensure_dirs(self) -> None:
        self.partial_dir.mkdir(parents=True, exist_ok=True)

    def partial_path(self, sha256: str) -> Path:
        return self.partial_dir / f"{sha256}.part"

    def final_path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root.parent))

    def open_at(self, sha256: str, offset: int) -> BinaryIO:
        """Open the partial file for appending at ``offset`` (bytes past it are dropped)."""
        self.ensure_dirs()
        path = self.partial_path(sha256)
        fh = open(path, "r+b" if path.exists() else "w+b")  # noqa: SIM115 - closed by finish()
        fh.truncate(offset)
        fh.seek(offset)
        return fh

    @staticmethod
    def write(fh: BinaryIO, data: bytes) -> None:
        fh.write(data)

    @staticmethod
    def finish(fh: BinaryIO) -> int:
        """Flush and fsync; return the file's length (what is durably received)."""
        try:
            fh.flush()
            os.fsync(fh.fileno())
            return fh.tell()
        finally:
            fh.close()

    def partial_idle_s(self, sha256: str) -> float:
        """Seconds since the partial file was last written (infinite when there is none)."""
        try:
            return max(0.0, time.time() - self.partial_path(sha256).stat().st_mtime)
        except FileNotFoundError:
            return float("inf")

    def partial_size(self, sha256: str) -> int:
        path = self.partial_path(sha256)
        return path.stat().st_size if path.exists() else 0

    def verify_and_commit(self, sha256: str) -> bool:
        """Hash the partial file; on a match move it into place (durably) and return True."""
        return commit_verified(self.partial_path(sha256), sha256, self.final_path(sha256))

    def discard(self, sha256: str) -> None:
        self.partial_path(sha256).unlink(missing_ok=True)
