"""outpost.files: the one place for durable writes and verified blob commits (real files)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from outpost.files import commit_verified, copy_durably, write_atomically


def test_a_verified_partial_is_moved_into_place(tmp_path: Path) -> None:
    data = b"photo bytes" * 1000
    sha = hashlib.sha256(data).hexdigest()
    partial = tmp_path / "partial" / f"{sha}.part"
    partial.parent.mkdir()
    partial.write_bytes(data)
    final = tmp_path / sha[:2] / sha
    assert commit_verified(partial, sha, final)
    assert final.read_bytes() == data and not partial.exists()


def test_a_partial_that_does_not_match_its_hash_is_deleted(tmp_path: Path) -> None:
    partial = tmp_path / "x.part"
    partial.write_bytes(b"not what was promised")
    final = tmp_path / "ab" / ("ab" + "0" * 62)
    assert not commit_verified(partial, "ab" + "0" * 62, final)
    assert not partial.exists() and not final.exists()


def test_write_atomically_sets_the_mode_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    old = os.umask(0o077)
    try:
        write_atomically(path, "token\n", 0o644)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and path.read_text() == "token\n"
    write_atomically(path, b"again", 0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_bytes() == b"again"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]


def test_write_atomically_never_writes_through_a_stale_temp_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    path = tmp_path / "target"
    (tmp_path / f".target.tmp-{os.getpid()}").symlink_to(victim)
    write_atomically(path, "new")
    assert victim.read_text() == "keep me" and path.read_text() == "new"


def test_write_atomically_raises_and_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        write_atomically(tmp_path / "missing-dir" / "f", "x")
    assert list(tmp_path.iterdir()) == []


def test_copy_durably(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"x" * 3_000_000)
    dst = tmp_path / "a" / "b" / "dst"
    copy_durably(src, dst)
    assert dst.read_bytes() == src.read_bytes()
    assert [p.name for p in dst.parent.iterdir()] == ["dst"]
