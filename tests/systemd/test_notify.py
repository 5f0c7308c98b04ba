"""outpost.notify against a real process: READY, WATCHDOG cadence, stalls, health."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from outpost.notify import Notifier, child_environ, watchdog_interval

from .conftest import NotifyListener

TINY = Path(__file__).with_name("tiny_service.py")
WATCHDOG_USEC = 400_000  # pings every 0.2 s


def _spawn(listener: NotifyListener, sick_file: Path, **extra: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "NOTIFY_SOCKET": listener.address,
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
        **extra,
    }
    return subprocess.Popen(
        [sys.executable, str(TINY), str(sick_file)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.fixture
def stop_later() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)
        if p.stderr:
            p.stderr.close()


def _max_gap(times: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def test_ready_then_regular_watchdog_then_stopping(
    notify_socket: NotifyListener, tmp_path: Path, stop_later: list[subprocess.Popen[bytes]]
) -> None:
    proc = _spawn(notify_socket, tmp_path / "sick")
    stop_later.append(proc)
    ready = notify_socket.wait_for("READY", "1")
    assert ready.fields["STATUS"] == "tiny service up"
    notify_socket.wait_for("WATCHDOG", "1")
    pings = [m.at for m in notify_socket.collect(1.2) if m.fields.get("WATCHDOG") == "1"]
    assert len(pings) >= 4, pings
    assert _max_gap(pings) < WATCHDOG_USEC / 1e6  # always well inside the deadline
    proc.send_signal(signal.SIGTERM)
    notify_socket.wait_for("STOPPING", "1")
    assert proc.wait(timeout=10) == 0


def test_abstract_socket(
    abstract_notify_socket: NotifyListener,
    tmp_path: Path,
    stop_later: list[subprocess.Popen[bytes]],
) -> None:
    stop_later.append(_spawn(abstract_notify_socket, tmp_path / "sick"))
    abstract_notify_socket.wait_for("READY", "1")
    abstract_notify_socket.wait_for("WATCHDOG", "1")


def test_stalled_loop_stops_pings(
    notify_socket: NotifyListener, tmp_path: Path, stop_later: list[subprocess.Popen[bytes]]
) -> None:
    proc = _spawn(
        notify_socket, tmp_path / "sick", OUTPOST_TEST_STALL_SIGNAL="1", OUTPOST_TEST_STALL_S="1.5"
    )
    stop_later.append(proc)
    notify_socket.wait_for("WATCHDOG", "1")
    proc.send_signal(signal.SIGUSR2)
    unhealthy = notify_socket.wait_for("STATUS", timeout=5)
    assert unhealthy.fields["STATUS"].startswith("unhealthy: event loop was blocked")
    resumed = notify_socket.wait_for("WATCHDOG", "1", timeout=5)
    pings = [m.at for m in notify_socket.messages if m.fields.get("WATCHDOG") == "1"]
    last_before = max(t for t in pings if t < unhealthy.at)
    # No ping for longer than the whole watchdog period: systemd would restart us.
    assert resumed.at - last_before > WATCHDOG_USEC / 1e6
    assert proc.poll() is None


def test_stall_trigger_is_off_by_default(
    notify_socket: NotifyListener, tmp_path: Path, stop_later: list[subprocess.Popen[bytes]]
) -> None:
    proc = _spawn(notify_socket, tmp_path / "sick")
    stop_later.append(proc)
    notify_socket.wait_for("READY", "1")
    proc.send_signal(signal.SIGUSR2)  # default action: terminate
    assert proc.wait(timeout=10) == -signal.SIGUSR2


def test_unhealthy_store_stops_pings_until_it_recovers(
    notify_socket: NotifyListener, tmp_path: Path, stop_later: list[subprocess.Popen[bytes]]
) -> None:
    sick = tmp_path / "sick"
    stop_later.append(_spawn(notify_socket, sick))
    notify_socket.wait_for("WATCHDOG", "1")
    sick.touch()
    status = notify_socket.wait_for("STATUS", "unhealthy: health check failed")
    quiet = notify_socket.collect(0.8)
    assert not [m for m in quiet if "WATCHDOG" in m.fields], quiet
    sick.unlink()
    assert notify_socket.wait_for("WATCHDOG", "1").at - status.at > 0.8


def test_watchdog_interval_rules() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    mine = str(os.getpid())
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": mine}) == 1.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None


def test_child_environ_drops_notify_variables() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "2", "PATH": "/bin"}
    assert child_environ(env) == {"PATH": "/bin"}


def test_notifier_without_socket_is_a_no_op() -> None:
    n = Notifier.from_env({})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog() is False
    n.close()


def test_notifier_survives_a_vanished_manager(tmp_path: Path) -> None:
    n = Notifier(str(tmp_path / "gone.sock"))
    assert n.enabled
    assert n.ready("x") is False  # logged once, never raised
    assert n.watchdog() is False
    n.close()


def test_status_is_one_short_line(notify_socket: NotifyListener) -> None:
    n = Notifier(notify_socket.address)
    assert n.status("line one\nline two " + "x" * 500)
    msg = notify_socket.wait_for("STATUS")
    assert "\n" not in msg.fields["STATUS"]
    assert len(msg.fields["STATUS"]) <= 200
    n.close()
