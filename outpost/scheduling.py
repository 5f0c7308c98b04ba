"""The one way both services run periodic work: APScheduler 3 in the event loop.

Late jobs are coalesced and run once rather than skipped silently
(APScheduler's default grace of 1 s would drop them on a busy Pi or a busy
central), and a job never overlaps itself. Start the scheduler from inside
the running loop (``AsyncIOScheduler.start()`` needs it). Which work is a
scheduled job and which stays a loop of its own: docs/architecture.md,
"Periodic work".
"""

from __future__ import annotations

import logging
from datetime import UTC
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 60}


def new_scheduler() -> AsyncIOScheduler:
    """An AsyncIOScheduler with Outpost's job defaults (not started)."""
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    # APScheduler logs every run at INFO; a journal has better uses.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    return AsyncIOScheduler(timezone=UTC, job_defaults=dict(JOB_DEFAULTS))
