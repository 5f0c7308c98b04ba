"""The one way both services run periodic work: APScheduler 3 in the event loop.

Late jobs are coalesced and run once rather than skipped silently
(APScheduler's default grace of 1 s would drop them on a busy Pi or a busy
central), and a job never overlaps itself. Start the scheduler from inside
the running loop (``AsyncIOScheduler.start()`` needs it). Which work is a
scheduled job and which stays a loop of its own: docs/architecture.md,
"Periodic work".
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import TYPE_CHECKING, ParamSpec, TypeVar

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

_LOGGER = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 60}


def new_scheduler() -> AsyncIOScheduler:
    """An AsyncIOScheduler with Outpost's job defaults (not started)."""
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    # APScheduler logs every run at INFO; a journal has better uses.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    return AsyncIOScheduler(timezone=UTC, job_defaults=dict(JOB_DEFAULTS))


def stoppable(job: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T | None]]:
    """``job`` ending quietly when the service stops mid-run.

    ``shutdown(wait=False)`` cancels a running job, and APScheduler logs that
    as an exception with a traceback; a stop is normal (each job's writes are
    one transaction, so a cancelled one left nothing half done).
    """

    @functools.wraps(job)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T | None:
        try:
            return await job(*args, **kwargs)
        except asyncio.CancelledError:
            _LOGGER.debug("%s stopped by the service's shutdown", getattr(job, "__name__", job))
            return None

    return run
