"""``outpost-bridge``: one-line config errors, clean shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.broker import Broker, free_port, wait_port

EXE = str(Path(sys.executable).parent / "outpost-bridge")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ('[admin]\nport = "x"\n', "admin.port"),
        ("[central]\nnope = 1\n", "central.nope: unknown key"),
        ('[central]\ndatabase_url = "mysql://h/db"\n', "central.database_url"),
        ('[admin]\ntoken = "short"\n', "admin.token"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_bad_config_is_one_line_exit_2(tmp_path: Path, toml: str, needle: str) -> None:
    cfg = tmp_path / "bridge.toml"
    cfg.write_text(toml)
    result = run("run", "--config", str(cfg))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_and_check_config(tmp_path: Path) -> None:
    result = run("run", "--config", str(tmp_path / "absent.toml"))
    assert result.returncode == 2 and "not found" in result.stderr
    cfg = tmp_path / "bridge.toml"
    cfg.write_text('[central]\ndatabase_url = "sqlite:///x.db"\n')
    result = run("run", "--config", str(cfg), "--check-config")
    assert result.returncode == 0 and "config OK" in result.stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_runs_and_stops_cleanly(tmp_path: Path, broker: Broker, sig: signal.Signals) -> None:
    port = free_port()
    cfg = tmp_path / "bridge.toml"
    cfg.write_text(
        f'[central]\ndatabase_url = "sqlite:///{tmp_path}/central.db"\ndata_dir = "{tmp_path}/data"\n'
        f"[admin]\nport = {port}\n"
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n'
    )
    log = tmp_path / "bridge.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [EXE, "run", "--config", str(cfg)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_port(port, timeout=30)
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "Traceback" not in text, text
    assert "admin token is in" in text
    token = (tmp_path / "data" / "admin-token").read_text().strip()
    assert token not in text  # the path is logged, never the token
    assert "stopping" in text
