"""``make demo`` keeps working: the whole story runs and every process stops."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_plays_the_crews_day_and_stops_cleanly(tmp_path: Path) -> None:
    env = {**os.environ, "OUTPOST_DEMO_EXIT": "1", "OUTPOST_DEMO_DIR": str(tmp_path / "demo")}
    done = subprocess.run(
        [sys.executable, "-m", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "FAILED" not in out
    assert "everything applied exactly once: applied 6" in out
    assert "3 activities checked back in and online again" in out
    assert "Outpost is running:" in out and "/fleet" in out
    assert "stopping gateway, bridge and broker" in out
    # nothing of the demo is left running
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path / "demo") not in ps
