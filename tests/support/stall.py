"""Test-only: make ``SIGUSR2`` block a process's main thread, so its event loop stalls.

Proves the systemd watchdog pings stop when the loop stops turning (and
systemd restarts the service). Not in the product: a test arms it in the
process under test, through ``python -m tests.support.stall_gateway`` or a
``.pth`` line in a test venv (``import tests.support.stall; tests.support.stall.arm()``).

Armed only with ``OUTPOST_TEST_STALL_SIGNAL=1``; it blocks for
``OUTPOST_TEST_STALL_S`` seconds (default 5). A Python signal handler runs in
the main thread, between the loop's steps: blocking there blocks the loop.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Mapping
from types import FrameType

STALL_ENV = "OUTPOST_TEST_STALL_SIGNAL"
STALL_SECONDS_ENV = "OUTPOST_TEST_STALL_S"


def arm(environ: Mapping[str, str] | None = None) -> bool:
    """Install the SIGUSR2 stall if the environment asks for it; True when installed."""
    environ = os.environ if environ is None else environ
    if environ.get(STALL_ENV) != "1":
        return False
    try:
        seconds = float(environ.get(STALL_SECONDS_ENV, "5"))
    except ValueError:
        seconds = 5.0

    def stall(signum: int, frame: FrameType | None) -> None:
        logging.getLogger("outpost.test_stall").warning(
            "test stall: blocking the event loop for %.1f s", seconds
        )
        time.sleep(seconds)  # the point: a loop that stops turning

    signal.signal(signal.SIGUSR2, stall)
    return True
