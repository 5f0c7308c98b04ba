"""Writing files the way credentials need: atomically, with their mode from the start."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from outpost.files import read_error, write_atomically
from provisioning.errors import ProvisionError

SECRET = 0o600
PUBLIC = 0o644


def write_file(path: Path, data: bytes | str, mode: int = PUBLIC) -> None:
    """Write ``data`` to ``path`` via a temp file + rename; the file never exists with a wider mode."""
    try:
        write_atomically(path, data, mode)
    except OSError as exc:
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
