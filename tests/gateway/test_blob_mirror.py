"""The blob mirror's pass: what it copies, and what a coarse directory mtime hides."""

from __future__ import annotations

import os
import time
from pathlib import Path

from gateway.replication.blob_mirror import RACY_NS, BlobMirror


def _blob(root: Path, name: str, data: bytes) -> None:
    shard = root / name[:2]
    shard.mkdir(parents=True, exist_ok=True)
    (shard / name).write_bytes(data)


def test_a_blob_added_without_moving_the_directory_mtime_is_still_copied(
    tmp_path: Path,
) -> None:
    """Timestamps come in kernel ticks: a blob renamed into a shard in the same tick as
    the scan before leaves the shard's mtime as the scan saw it."""
    source, target = tmp_path / "blobs", tmp_path / "replica"
    first, second = "ab" + "0" * 62, "ab" + "1" * 62
    _blob(source, first, b"one")
    mirror = BlobMirror(source, target)
    assert mirror.run_once().copied == 1
    shard = source / "ab"
    seen = shard.stat().st_mtime_ns
    _blob(source, second, b"two")
    os.utime(shard, ns=(seen, seen))  # the same tick: the mtime did not move
    assert mirror.run_once().copied == 1
    assert (target / "ab" / second).read_bytes() == b"two"
    assert mirror.mirrored == 2


def test_an_old_unchanged_directory_is_not_scanned_again(tmp_path: Path) -> None:
    source, target = tmp_path / "blobs", tmp_path / "replica"
    name = "cd" + "2" * 62
    _blob(source, name, b"three")
    old = time.time_ns() - 2 * RACY_NS
    os.utime(source / "cd", ns=(old, old))
    mirror = BlobMirror(source, target)
    assert mirror.run_once().copied == 1
    (target / "cd" / name).unlink()  # gone from the replica behind the mirror's back
    assert mirror.run_once().copied == 0  # unchanged since a settled scan: skipped
    os.utime(source / "cd")  # the directory changed: scanned, the copy made again
    assert mirror.run_once().copied == 1
