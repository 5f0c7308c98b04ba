"""Start one of Outpost's console scripts as a real process and wait until it serves."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def start_serving(
    command: str, config: Path, log: Path, url: str, timeout_s: float = 30
) -> subprocess.Popen[bytes]:
    """``<command> run --config <config>`` with its output in ``log``, once ``url/healthz`` is 200.

    Fails with the log's tail when the process exits or does not answer in time.
    """
    exe = Path(sys.executable).parent / command
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(exe), "run", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as r:
                if r.status == 200:
                    return proc
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise AssertionError(f"{command} did not start:\n{tail}")
        time.sleep(0.05)  # poll interval while it starts
