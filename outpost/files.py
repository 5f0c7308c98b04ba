"""One sentence for why a file could not be read, the same on every command."""

from __future__ import annotations

from pathlib import Path


def read_error(path: Path | str, what: str, exc: OSError) -> str:
    """``"<path>: <what> not found"`` and the like, for a one-line error."""
    if isinstance(exc, FileNotFoundError):
        return f"{path}: {what} not found"
    if isinstance(exc, PermissionError):
        return f"{path}: {what} is not readable (permission denied)"
    if isinstance(exc, IsADirectoryError):
        return f"{path}: is a directory, not a {what}"
    return f"{path}: cannot read {what}: {exc.strerror or exc}"
