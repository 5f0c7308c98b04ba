"""A real `outpost-gateway run` speaks sd_notify: READY after it listens,
WATCHDOG while healthy, silence while its event loop is stalled, STOPPING."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import NotifyListener

WATCHDOG_USEC = 1_000_000  # pings every 0.5 s


@pytest.fixture
def gateway_config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""
[gateway]
id = "site-notify"
data_dir = "{tmp_path / "data"}"
[lan]
host = "127.0.0.1"
port = 0
[mqtt]
enabled = false
[discovery]
enabled = false
[replication]
enabled = false
"""
    )
    return path


def _gateway_command() -> list[str]:
    # outpost-gateway's main, with the test-only SIGUSR2 stall armed.
    return [sys.executable, "-m", "tests.support.stall_gateway"]


@pytest.fixture
def stderr_file(tmp_path: Path) -> Path:
    return tmp_path / "journal.txt"


@pytest.fixture
def gateway(
    gateway_config: Path, notify_socket: NotifyListener, stderr_file: Path
) -> Iterator[subprocess.Popen[bytes]]:
    err = stderr_file.open("wb")
    st = os.fstat(err.fileno())
    env = {
        **os.environ,
        "NOTIFY_SOCKET": notify_socket.address,
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),  # tests.support.stall_gateway
        "OUTPOST_TEST_STALL_SIGNAL": "1",
        "OUTPOST_TEST_STALL_S": "1.5",
        # As under systemd: stderr is "the journal", so lines carry <N> priorities.
        "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
    }
    proc = subprocess.Popen(
        [*_gateway_command(), "run", "--config", str(gateway_config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    err.close()


def test_ready_watchdog_stall_and_stopping(
    gateway: subprocess.Popen[bytes], notify_socket: NotifyListener, stderr_file: Path
) -> None:
    ready = notify_socket.wait_for("READY", "1", timeout=60)
    url = ready.fields["STATUS"].rsplit(" ", 1)[-1]
    assert url.startswith("http://127.0.0.1:")
    # READY means serving: the API answers at once.
    with urllib.request.urlopen(f"{url}/healthz", timeout=5) as resp:
        assert resp.status == 200

    notify_socket.wait_for("WATCHDOG", "1")
    healthy = notify_socket.collect(1.2)
    assert len([m for m in healthy if m.fields.get("WATCHDOG") == "1"]) >= 2

    gateway.send_signal(signal.SIGUSR2)  # test-only: block the event loop for 1.5 s
    unhealthy = notify_socket.wait_for("STATUS", timeout=10)
    assert unhealthy.fields["STATUS"].startswith("unhealthy: event loop was blocked")
    resumed = notify_socket.wait_for("WATCHDOG", "1", timeout=10)
    pings = [m.at for m in notify_socket.messages if m.fields.get("WATCHDOG") == "1"]
    last_before = max(t for t in pings if t < unhealthy.at)
    gap = resumed.at - last_before
    assert gap > WATCHDOG_USEC / 1e6, f"pings went on during the stall (gap {gap:.2f} s)"

    gateway.send_signal(signal.SIGTERM)
    notify_socket.wait_for("STOPPING", "1")
    assert gateway.wait(timeout=30) == 0

    journal = stderr_file.read_text().splitlines()
    assert journal and all(line[:3] in {"<2>", "<3>", "<4>", "<6>", "<7>"} for line in journal)
    assert any(
        line.startswith("<4>outpost.notify: watchdog: not pinging systemd") for line in journal
    )
