"""Writing files the way credentials need: atomically, with their mode from the start."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from outpost.files import read_error
from provisioning.errors import ProvisionError

SECRET = 0o600
PUBLIC = 0o644


def write_file(path: Path, data: bytes | str, mode: int = PUBLIC) -> None:
    """Write ``data`` to ``path`` via a temp file + rename; the file never exists with a wider mode."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # a stale temp file from a crash; never write through a link
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        try:
            os.fchmod(fd, mode)  # the umask must not narrow or widen what we chose
            os.write(fd, raw)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ProvisionError(f"cannot write {path}: {exc.strerror or exc}") from None


def make_dir(path: Path, mode: int = 0o755) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=mode)
    except FileExistsError:
        raise ProvisionError(f"{path} exists and is not a directory") from None
    except OSError as exc:
        raise ProvisionError(f"cannot create directory {path}: {exc.strerror or exc}") from None


def read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ProvisionError(read_error(path, what, exc)) from None


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on the fleet directory while changing its state."""
    try:
        fd = os.open(directory / ".lock", os.O_WRONLY | os.O_CREAT, SECRET)
    except OSError as exc:
        raise ProvisionError(f"cannot lock {directory}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
