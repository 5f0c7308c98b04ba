"""A Mosquitto on this machine, on a free port, with the config a run needs.

Used by the demo, the benchmarks and the tests (which start their own broker
rather than rely on one the machine may not run).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
