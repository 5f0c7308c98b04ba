"""A tiny asyncio service speaking sd_notify through outpost.notify (for tests).

Usage: python tiny_service.py SICK_FILE — it reports unhealthy while SICK_FILE
exists; SIGTERM makes it send STOPPING=1 and exit 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: tests.support

from outpost.logs import setup_logging
from outpost.notify import (
    Notifier,
    async_start_watchdog,
    async_stop_watchdog,
)
from tests.support.stall import arm as arm_stall


async def main(sick_file: str) -> None:
    notifier = Notifier.from_env()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    arm_stall()
    notifier.ready("tiny service up")
    watchdog = async_start_watchdog(notifier, lambda: not os.path.exists(sick_file))
    await stop.wait()
    notifier.stopping("tiny service stopping")
    await async_stop_watchdog(watchdog)
    notifier.close()


if __name__ == "__main__":
    setup_logging("info")
    asyncio.run(main(sys.argv[1]))
