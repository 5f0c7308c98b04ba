"""A Mosquitto on this machine, on a free port, with the config a run needs.

Used by the demo, the benchmarks and the tests (which start their own broker
rather than rely on one the machine may not run).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

# Ports handed out by free_port(): below the kernel's ephemeral range
# (32768-60999 here), so no outgoing connection takes one meanwhile.
PORT_LOW, PORT_HIGH = 10_000, 32_000
_PORT_COUNTER = Path(tempfile.gettempdir()) / f"outpost-test-ports-{os.getuid()}"


def free_port() -> int:
    """A port nothing listens on, not handed out recently to any process here.

    ``bind(("127.0.0.1", 0))`` then close leaves a window until the caller's
    server binds (a gateway process imports for a second or more); another
    process — a parallel test worker, a child the test started — could be
    handed the same port by the kernel in it. Instead one counter, in a file
    every process on this machine shares under ``flock``, walks
    ``PORT_LOW..PORT_HIGH``: a port comes round again only after some 22,000
    others, and one that is still bound is skipped.
    """
    span = PORT_HIGH - PORT_LOW
    fd = os.open(_PORT_COUNTER, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.pread(fd, 32, 0).strip()
        n = int(raw) if raw.isdigit() else random.randrange(span)
        for _ in range(span):
            port = PORT_LOW + n % span
            n += 1
            if _bindable(port):
                break
        else:
            raise RuntimeError(f"no free port in {PORT_LOW}..{PORT_HIGH}")
        data = str(n % span).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        return port
    finally:
        os.close(fd)  # releases the lock


def _bindable(port: int) -> bool:
    """Nothing holds ``port`` on any address (no SO_REUSEADDR: a TIME_WAIT counts too)."""
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Broker:
    """One Mosquitto process; ``stop()``/``start()`` simulate a broker outage.

    ``persistence=True`` keeps sessions and queued QoS 1 messages across a
    restart, as a production broker would.
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        persistence: bool = True,
        extra: str = "",
        command_prefix: list[str] | None = None,
    ) -> None:
        self.workdir = workdir
        # e.g. ["setpriv", "--pdeathsig", "TERM", "--"]: the broker dies with its parent
        self.command_prefix = list(command_prefix or [])
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        lines = [
            "per_listener_settings false",
            "allow_anonymous true",
            # Mosquitto drops queued QoS 1 messages past 1000 by default.
            "max_queued_messages 100000",
            "max_inflight_messages 0",
            "set_tcp_nodelay true",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if os.getuid() == 0:
            # As root Mosquitto drops to user "mosquitto", which cannot write
            # the test's temp dir: stay as we are.
            lines.append("user root")
        if persistence:
            lines += ["persistence true", f"persistence_location {workdir}/", "autosave_interval 1"]
        if extra.strip():
            lines.append(extra.strip())
        else:
            lines.append(f"listener {self.port} 127.0.0.1")
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Broker:
        assert self.proc is None, "broker already running"
        self.proc = subprocess.Popen(
            [*self.command_prefix, MOSQUITTO, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start; see {self.log}") from None
        return self

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
