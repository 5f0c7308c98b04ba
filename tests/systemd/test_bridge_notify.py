"""A real `outpost-bridge run` tells systemd READY once it serves, pings, STOPPING."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.broker import Broker

from .conftest import NotifyListener


def _bridge_command() -> list[str]:
    script = Path(sys.executable).with_name("outpost-bridge")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cloud_bridge"]


def test_bridge_ready_watchdog_stopping(
    tmp_path: Path, broker: Broker, notify_socket: NotifyListener
) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(
        f"""
[central]
database_url = "sqlite:///{tmp_path / "central.db"}"
data_dir = "{tmp_path / "central"}"
[admin]
host = "127.0.0.1"
port = 0
[mqtt]
host = "{broker.host}"
port = {broker.port}
"""
    )
    env = {**os.environ, "NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "1000000"}
    proc = subprocess.Popen(
        [*_bridge_command(), "run", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ready = notify_socket.wait_for("READY", "1", timeout=60)
        url = ready.fields["STATUS"].rsplit(" ", 1)[-1]
        # READY means the admin API answers (401 without a token is an answer).
        try:
            urllib.request.urlopen(f"{url}/api/v1/gateways", timeout=5)
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
        notify_socket.wait_for("WATCHDOG", "1")
        proc.send_signal(signal.SIGTERM)
        notify_socket.wait_for("STOPPING", "1")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
