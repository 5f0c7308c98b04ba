"""Running blocking database work off the event loop, in the bridge's DB threads."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from sqlalchemy.orm import Session

from cloud_bridge.db import Database

P = ParamSpec("P")
T = TypeVar("T")


class DbRunner:
    """A small thread pool for the database; ``async_call`` awaits blocking work."""

    def __init__(
        self, db: Database, threads: int | None = None, *, name: str = "central-db"
    ) -> None:
        self.db = db
        # SQLite has one writer anyway; PostgreSQL gains from a few connections.
        threads = threads or (2 if db.sqlite else 4)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=name)

    async def async_call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def async_tx(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` in one transaction in a DB thread."""

        def work() -> T:
            with self.db.session() as session:
                return fn(session)

        return await self.async_call(work)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
