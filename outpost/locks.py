"""An ``asyncio.Lock`` per key (one upload per attachment, one writer per blob)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class KeyedLocks:
    """An ``asyncio.Lock`` per key, forgotten once nobody holds or waits for it.

    Counting holders and waiters (not asking ``lock.locked()``) keeps the lock
    while a waiter is between the release and its turn, so a third caller
    never gets a fresh lock of its own meanwhile.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def async_hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            _, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)
