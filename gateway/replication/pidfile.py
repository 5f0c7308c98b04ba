"""The litestream child's pid file, and stopping a litestream a previous run left behind.

If the gateway was killed (SIGKILL, OOM) its litestream may still run; a
second one on the same database would fight it. The pid file says which
process was ours, and its command line confirms it still is (pids are reused).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

logger = logging.getLogger(__name__)

PIDFILE_NAME = "litestream.pid"


def write_pidfile(path: Path, pid: int) -> None:
    path.write_text(f"{pid}\n")


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_orphan(pidfile: Path, config_path: Path, stop_timeout_s: float) -> None:
    """Stop a litestream a previous gateway run left behind for ``config_path`` (blocking)."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        for _ in range(20):  # empty while a process is between fork and exec
            if cmdline != [b""]:
                break
            time.sleep(0.05)
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return
    if not any(arg.endswith(b"litestream") for arg in cmdline) or (
        str(config_path).encode() not in cmdline
    ):
        return  # the pid now belongs to something else
    logger.warning("stopping litestream (pid %d) left over from a previous run", pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + stop_timeout_s
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
