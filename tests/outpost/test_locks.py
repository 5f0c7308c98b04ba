"""outpost.locks.KeyedLocks: one holder per key, and no lock kept once nobody needs it."""

from __future__ import annotations

import asyncio

from outpost.locks import KeyedLocks


async def test_one_holder_per_key_and_other_keys_go_ahead() -> None:
    locks = KeyedLocks()
    inside: list[str] = []
    most = 0

    async def work(key: str) -> None:
        nonlocal most
        async with locks.async_hold(key):
            inside.append(key)
            most = max(most, inside.count("a"))
            await asyncio.sleep(0.01)
            inside.remove(key)

    await asyncio.gather(*(work("a") for _ in range(5)), work("b"))
    assert most == 1
    assert len(locks) == 0  # forgotten once the last holder left


async def test_a_waiter_between_release_and_its_turn_keeps_the_lock() -> None:
    """The bug a `lock.locked()` check has: a third caller must not get a fresh lock."""
    locks = KeyedLocks()
    order: list[str] = []
    held = asyncio.Event()

    async def first() -> None:
        async with locks.async_hold("k"):
            held.set()
            await asyncio.sleep(0.01)
            order.append("first-out")

    async def second() -> None:
        await held.wait()
        async with locks.async_hold("k"):
            order.append("second-in")
            await asyncio.sleep(0.01)
            order.append("second-out")

    async def third() -> None:
        await held.wait()
        await asyncio.sleep(0.011)  # arrives right as first releases
        async with locks.async_hold("k"):
            order.append("third-in")

    await asyncio.gather(first(), second(), third())
    assert order.index("third-in") > order.index("second-out")
    assert len(locks) == 0
