"""The real gateway under the unit's key restrictions, without systemd.

Like ``outpost-gateway.service``: an unprivileged user with no capabilities
(empty CapabilityBoundingSet, no ambient ones), NoNewPrivileges, and
MemoryDenyWriteExecute (the kernel's PR_SET_MDWE, which systemd's seccomp
rule mirrors) — with litestream replicating and mDNS pinned to loopback, so
CPython, cffi and the Go binary are all exercised. systemd's own pieces
(seccomp filters, namespaces) are checked statically by test_units.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import NotifyListener

HERE = Path(__file__).parent
NOBODY = 65534


def _user_flags() -> list[str]:
    """Drop to ``nobody`` when it can run this Python; else stay uid 0 with no capabilities
    (a dev venv whose interpreter lives under a 0700 /root)."""
    as_nobody = [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    nested_exec = "import os, sys; os.execv(sys.executable, [sys.executable, '-c', 'pass'])"
    probe = subprocess.run(
        ["setpriv", *as_nobody, sys.executable, "-c", nested_exec], capture_output=True
    )
    return as_nobody if probe.returncode == 0 else []


def _mdwe_supported() -> bool:
    """PR_SET_MDWE works here, and a W+X mapping is refused after exec."""
    wx = "import mmap; mmap.mmap(-1, 4096, prot=7)"  # PROT_READ|PROT_WRITE|PROT_EXEC
    probe = subprocess.run(
        [sys.executable, str(HERE / "mdwe_exec.py"), sys.executable, "-c", wx],
        capture_output=True,
        text=True,
    )
    return probe.returncode == 1 and "PermissionError" in probe.stderr


pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) missing"),
]


@pytest.fixture
def sandbox_dir() -> Iterator[Path]:
    # Outside pytest's 0700 tmp tree, so the unprivileged user can reach it.
    path = Path(tempfile.mkdtemp(prefix="outpost-sandbox-", dir="/tmp"))
    path.chmod(0o755)
    for sub in ("data", "replica"):
        (path / sub).mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def notify_socket(sandbox_dir: Path) -> Iterator[NotifyListener]:
    """Like systemd's: a socket the service user can reach and write to."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = sandbox_dir / "notify.sock"
    sock.bind(str(path))
    path.chmod(0o666)
    try:
        yield NotifyListener(sock, str(path))
    finally:
        sock.close()


def test_gateway_runs_unprivileged_without_wx_memory(
    sandbox_dir: Path, notify_socket: NotifyListener
) -> None:
    if not _mdwe_supported():
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    config = sandbox_dir / "gateway.toml"
    config.write_text(
        f"""
[gateway]
id = "site-sandbox"
data_dir = "{sandbox_dir / "data"}"
[lan]
host = "127.0.0.1"
port = 0
[mqtt]
enabled = false
[discovery]
enabled = true
interfaces = ["127.0.0.1"]
[replication]
enabled = true
path = "{sandbox_dir / "replica"}"
"""
    )
    script = Path(sys.executable).with_name("outpost-gateway")
    gateway = [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]
    user = _user_flags()
    uid = NOBODY if user else 0
    for sub in ("data", "replica"):
        os.chown(sandbox_dir / sub, uid, uid)
    cmd = [
        "setpriv", *user, "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
        sys.executable, str(HERE / "mdwe_exec.py"),
        *gateway, "run", "--config", str(config),
    ]  # fmt: skip
    env = {
        **os.environ,
        "NOTIFY_SOCKET": notify_socket.address,
        "WATCHDOG_USEC": "2000000",
        "HOME": str(sandbox_dir / "data"),
    }
    log = sandbox_dir / "stderr.txt"
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, cwd="/")
    try:
        deadline = time.monotonic() + 60
        while not any(m.fields.get("READY") == "1" for m in notify_socket.messages):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no READY=1 within 60 s"
            notify_socket.collect(0.2)
        notify_socket.wait_for("WATCHDOG", "1")
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert "NoNewPrivs:\t1" in status
        assert "CapEff:\t0000000000000000" in status
        if user:
            assert f"Uid:\t{NOBODY}" in status
        # litestream (Go) replicates under the same restrictions.
        deadline = time.monotonic() + 20
        while not any((sandbox_dir / "replica").iterdir()):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "litestream wrote nothing to the replica"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        notify_socket.wait_for("STOPPING", "1")
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    text = log.read_text()
    assert "Traceback" not in text and "ERROR" not in text, text
