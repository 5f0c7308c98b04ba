"""Copy completed attachment blobs next to the litestream file replica.

litestream replicates SQLite only; photos and signatures live as files under
``data_dir/blobs/<aa>/<sha256>`` (see ``gateway.store.blobs``). A completed
blob is immutable and named by its hash, so mirroring is "copy what the
replica lacks": to ``<replica>/blobs/<aa>/<sha256>`` through a temporary
file, fsync, rename, fsync the directory. Partial uploads are not copied.
A directory is rescanned only when its mtime changed, and always while its
mtime is recent: file timestamps are coarse (one kernel tick on many
kernels and filesystems), so a blob renamed in right after a scan may leave
the directory's mtime as it was (git's "racy" index entries, the same cure).

All functions block: call them from a thread.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from outpost.files import copy_durably

logger = logging.getLogger(__name__)

BLOBS_DIRNAME = "blobs"
SKIP_DIRS = frozenset({"partial"})
# A directory whose mtime is younger than this at the scan may change again
# without its mtime moving: it is scanned again next time.
RACY_NS = 2_000_000_000


def _is_blob_name(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


@dataclass
class MirrorResult:
    copied: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)


class BlobMirror:
    """Mirrors ``source/<aa>/<sha256>`` into ``target/<aa>/<sha256>``."""

    def __init__(self, source: Path, target: Path) -> None:
        self.source = source
        self.target = target
        self._dir_mtimes: dict[str, int] = {}
        self.mirrored = 0  # blobs known to be on the replica
        self.last_result = MirrorResult()

    def run_once(self) -> MirrorResult:
        result = MirrorResult()
        started_ns = time.time_ns()
        try:
            shards = [e for e in os.scandir(self.source) if e.is_dir() and e.name not in SKIP_DIRS]
        except FileNotFoundError:
            self.last_result = result
            return result
        for shard in shards:
            try:
                mtime = shard.stat().st_mtime_ns
            except FileNotFoundError:
                continue
            if self._dir_mtimes.get(shard.name) == mtime:
                continue
            ok = True
            for entry in os.scandir(shard.path):
                if not _is_blob_name(entry.name):
                    continue
                dst = self.target / shard.name / entry.name
                try:
                    size = entry.stat().st_size
                    if dst.exists() and dst.stat().st_size == size:
                        continue
                    copy_durably(Path(entry.path), dst)
                except OSError as exc:
                    ok = False
                    result.errors.append(f"blob {entry.name[:12]}…: {exc.strerror or exc}")
                    continue
                result.copied += 1
                result.bytes += size
            if ok and mtime < started_ns - RACY_NS:
                self._dir_mtimes[shard.name] = mtime
        if result.copied:
            self.mirrored += result.copied
            logger.debug(
                "mirrored %d blobs (%d bytes) to %s", result.copied, result.bytes, self.target
            )
        self.last_result = result
        return result


def restore_blobs(replica_blobs: Path, data_blobs: Path) -> tuple[int, int]:
    """Copy every blob from the replica back into the data directory: (copied, bytes)."""
    result = BlobMirror(replica_blobs, data_blobs).run_once()
    if result.errors:
        raise OSError(result.errors[0])
    return result.copied, result.bytes
