"""``outpost-gateway``: config checks exit 2 with one line; a good config passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gateway.cli import main


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OUTPOST_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=60,
    )


def test_check_config_ok(tmp_path: Path, capsys: object) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[gateway]\nid = "site-b"\n[lan]\nport = 8099\n')
    assert main(["run", "--config", str(cfg), "--check-config"]) == 0
    assert main(["check-config", "--config", str(cfg)]) == 0


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text("[lan]\nport = 'eighty'\n")
    done = _run("run", "--config", str(cfg))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "lan.port" in lines[0], done.stderr
    assert "Traceback" not in done.stderr

    cfg.write_text("[lan]\nprot = 80\n")
    done = _run("run", "--config", str(cfg), "--check-config")
    assert done.returncode == 2 and "lan.prot: unknown key" in done.stderr

    done = _run("run", "--config", str(tmp_path / "missing.toml"))
    assert done.returncode == 2 and "not found" in done.stderr

    cfg.write_text("")
    done = _run("run", "--config", str(cfg), env={"OUTPOST_STORE_SYNCHRONOUS": "OFF"})
    assert done.returncode == 2 and "store.synchronous" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_an_unusable_data_dir_is_one_line_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f'[gateway]\ndata_dir = "{blocker / "data"}"\n[mqtt]\nenabled = false\n'
        "[discovery]\nenabled = false\n[lan]\nport = 0\n"
    )
    done = _run("run", "--config", str(cfg))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("outpost-gateway: cannot start") and str(blocker) in last, done.stderr


def test_restore_without_a_replica_names_the_config_file_it_read(tmp_path: Path) -> None:
    cfg = tmp_path / "site-b.toml"
    cfg.write_text(f'[gateway]\ndata_dir = "{tmp_path / "data"}"\n')
    done = _run("restore", "--config", str(cfg))
    assert done.returncode == 1
    assert done.stderr.startswith(f"outpost-gateway restore: {cfg} names no replica"), done.stderr
    assert "gateway.toml" not in done.stderr
