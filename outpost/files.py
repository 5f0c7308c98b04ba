"""Files on disk, one way for every module: durable writes, verified commits, read errors.

Durability rule (an ack means committed to disk): a file's bytes are
fsynced before it is renamed into place, and its directory is fsynced after,
so the new name survives a power cut too. Everything here blocks: call it
from a thread when on the event loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path

HASH_READ = 1024 * 1024


def read_error(path: Path | str, what: str, exc: OSError) -> str:
    """``"<path>: <what> not found"`` and the like, for a one-line error."""
    if isinstance(exc, FileNotFoundError):
        return f"{path}: {what} not found"
    if isinstance(exc, PermissionError):
        return f"{path}: {what} is not readable (permission denied)"
    if isinstance(exc, IsADirectoryError):
        return f"{path}: is a directory, not a {what}"
    return f"{path}: cannot read {what}: {exc.strerror or exc}"


def fsync_dir(path: Path) -> None:
    """Make the names in directory ``path`` (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Write ``path`` whole or not at all, on disk, with ``mode`` from the start.

    Through a temp file beside it (never through a link a stale one left),
    fsynced, renamed into place, the directory fsynced. Raises OSError.
    """
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        try:
            os.fchmod(fd, mode)  # the umask must not narrow or widen what we chose
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def copy_durably(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` so that ``dst`` is either absent or complete, on disk."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        shutil.copyfileobj(fin, fout, HASH_READ)
        fout.flush()
        os.fsync(fout.fileno())
    os.replace(tmp, dst)
    fsync_dir(dst.parent)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(HASH_READ):
            digest.update(block)
    return digest.hexdigest()


def commit_verified(partial: Path, sha256: str, final: Path) -> bool:
    """Move a fully received (already fsynced) ``partial`` file to ``final`` if its hash matches.

    A match is renamed into place (its directory created if need be) and both
    directories fsynced: True. A mismatch is deleted: False. Content-addressed
    blobs on both sides (gateway and central) are committed only this way.
    """
    if sha256_of(partial) != sha256:
        partial.unlink(missing_ok=True)
        fsync_dir(partial.parent)
        return False
    if not final.parent.is_dir():
        final.parent.mkdir(parents=True, exist_ok=True)
        fsync_dir(final.parent.parent)
    os.replace(partial, final)
    fsync_dir(final.parent)
    fsync_dir(partial.parent)
    return True
