"""Store.is_healthy: what the systemd watchdog asks before each ping."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path

from sqlalchemy import Connection

from gateway.store.store import open_store
from tests.support.store_tasks import SqlWrite


async def test_a_hung_writer_is_unhealthy_until_it_finishes(tmp_path: Path) -> None:
    store = await asyncio.to_thread(open_store, tmp_path)
    release = threading.Event()
    try:
        assert store.is_healthy()

        def hang(conn: Connection) -> int:
            release.wait(10)
            return 1

        write = asyncio.ensure_future(store.async_write(SqlWrite(hang)))
        deadline = time.monotonic() + 5
        while store.is_healthy(stuck_after_s=0.2):
            assert time.monotonic() < deadline, "a hung writer still looks healthy"
            await asyncio.sleep(0.05)
        release.set()
        assert await write == 1
        # The writer clears its busy mark just after the callers hear of the commit.
        deadline = time.monotonic() + 5
        while not store.is_healthy(stuck_after_s=0.2):
            assert time.monotonic() < deadline, "the writer stayed unhealthy after finishing"
            await asyncio.sleep(0.01)
    finally:
        release.set()
        await store.async_close()
    assert not store.is_healthy()


async def test_a_failing_item_is_not_unhealthy(tmp_path: Path) -> None:
    store = await asyncio.to_thread(open_store, tmp_path)
    try:

        def broken(conn: Connection) -> None:
            raise ValueError("bad item")

        with contextlib.suppress(ValueError):
            await store.async_write(SqlWrite(broken))
        assert store.is_healthy()
    finally:
        await store.async_close()
