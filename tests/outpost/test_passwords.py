"""The shared password module: bounded argon2 work and an atomic lockout.

The lockout runs on real SQLite files and a real PostgreSQL database, with
concurrent connections in threads: at most ``max_failures`` attempts are
ever let through, however many arrive at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import Engine, MetaData, create_engine, event, select

from outpost.passwords import (
    LockoutPolicy,
    PasswordGate,
    PasswordsBusy,
    SignInLocked,
    check_unlocked,
    clear_attempts,
    hash_password,
    locked_until,
    lockout_table,
    record_failure,
    refund_attempt,
    reserve_attempt,
    verify_password,
)
from tests.support.postgres import fresh_database

CHEAP = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)


def test_hash_and_verify_through_the_default_gate() -> None:
    h = hash_password("s3cret")
    assert h.startswith("$argon2id$")
    assert verify_password(h, "s3cret")
    assert not verify_password(h, "nope")
    assert not verify_password(None, "s3cret")  # an unknown user
    assert not verify_password("not-a-hash", "x")
    assert not verify_password(h, "x" * 5000)  # refused before hashing


async def test_gate_runs_at_most_max_concurrent_and_the_rest_wait() -> None:
    gate = PasswordGate(max_concurrent=2, max_waiting=10, wait_s=30, hasher=CHEAP)
    try:
        h = await gate.async_hash("pw")
        gate.peak_running = 0
        results = await asyncio.gather(*(gate.async_verify(h, "pw") for _ in range(12)))
        assert results == [True] * 12
        assert gate.peak_running == 2
    finally:
        gate.close()


async def test_gate_refuses_beyond_its_wait_line_at_once() -> None:
    release = threading.Event()
    gate = PasswordGate(max_concurrent=1, max_waiting=1, wait_s=30, hasher=CHEAP)
    try:
        running = [asyncio.ensure_future(gate.async_run(release.wait)) for _ in range(2)]
        await asyncio.sleep(0)  # both admitted (one runs, one waits for its slot)
        t0 = time.monotonic()
        with pytest.raises(PasswordsBusy) as info:
            await gate.async_verify(None, "x")
        assert time.monotonic() - t0 < 1  # refused at once, not after the wait
        assert info.value.retry_after_s >= 1
        release.set()
        await asyncio.gather(*running)
    finally:
        release.set()
        gate.close()


async def test_gate_gives_up_after_wait_s() -> None:
    release = threading.Event()
    gate = PasswordGate(max_concurrent=1, max_waiting=4, wait_s=0.3, hasher=CHEAP)
    try:
        holding = threading.Event()

        def hold() -> None:
            holding.set()
            release.wait()

        busy = asyncio.ensure_future(gate.async_run(hold))
        await asyncio.get_running_loop().run_in_executor(None, holding.wait, 10)
        t0 = time.monotonic()
        with pytest.raises(PasswordsBusy):
            await gate.async_verify(None, "x")
        assert 0.25 < time.monotonic() - t0 < 5
        release.set()
        await busy
        assert await gate.async_verify(await gate.async_hash("a"), "a")  # free again
    finally:
        release.set()
        gate.close()


# --- lockout on real databases ---------------------------------------------------

POLICY = LockoutPolicy(max_failures=5, lockout_s=60)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def lock_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Engine, object]]:
    metadata = MetaData()
    table = lockout_table(metadata)
    if request.param == "sqlite":
        engine = create_engine(
            f"sqlite:///{tmp_path / 'lock.db'}",
            connect_args={"timeout": 30, "check_same_thread": False},
        )

        @event.listens_for(engine, "connect")
        def _autocommit(dbapi: object, _record: object) -> None:
            dbapi.isolation_level = None  # type: ignore[attr-defined]

        @event.listens_for(engine, "begin")
        def _immediate(conn: object) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # type: ignore[attr-defined]

        metadata.create_all(engine)
        yield engine, table
        engine.dispose()
    else:
        with fresh_database() as url:
            engine = create_engine(url, pool_size=20)
            metadata.create_all(engine)
            yield engine, table
            engine.dispose()


def _now() -> datetime:
    return datetime.now(UTC)


def test_attempts_are_numbered_and_the_last_one_locks(lock_db: tuple[Engine, object]) -> None:
    engine, table = lock_db
    keys = ["user:ana", "client:10.0.0.9"]
    now = _now()
    for n in range(1, 6):
        with engine.begin() as conn:
            assert reserve_attempt(conn, table, keys, POLICY, now) == n  # type: ignore[arg-type]
    with engine.begin() as conn:
        assert locked_until(conn, table, keys, now) is not None  # type: ignore[arg-type]
    with pytest.raises(SignInLocked) as info, engine.begin() as conn:
        reserve_attempt(conn, table, keys, POLICY, now)  # type: ignore[arg-type]
    assert 59 <= info.value.retry_after_s(now) <= 61
    # The lock runs out: a fresh period.
    later = now + timedelta(seconds=61)
    with engine.begin() as conn:
        assert reserve_attempt(conn, table, keys, POLICY, later) == 1  # type: ignore[arg-type]
        clear_attempts(conn, table, keys)  # type: ignore[arg-type]
        assert conn.execute(select(table)).all() == []  # type: ignore[call-overload]


def test_a_refused_key_rolls_back_the_others(lock_db: tuple[Engine, object]) -> None:
    engine, table = lock_db
    now = _now()
    for _ in range(5):
        with engine.begin() as conn:
            reserve_attempt(conn, table, ["user:bob"], POLICY, now)  # type: ignore[arg-type]
    with pytest.raises(SignInLocked), engine.begin() as conn:
        reserve_attempt(conn, table, ["client:c1", "user:bob"], POLICY, now)  # type: ignore[arg-type]
    with engine.begin() as conn:
        keys = set(conn.execute(select(table.c.key)).scalars())  # type: ignore[attr-defined]
    assert keys == {"user:bob"}  # client:c1 kept no reservation


def test_a_refund_gives_the_guess_back(lock_db: tuple[Engine, object]) -> None:
    engine, table = lock_db
    now = _now()
    for _ in range(5):
        with engine.begin() as conn:
            reserve_attempt(conn, table, ["user:cy"], POLICY, now)  # type: ignore[arg-type]
    with engine.begin() as conn:
        refund_attempt(conn, table, ["user:cy"], POLICY)  # type: ignore[arg-type]
        assert locked_until(conn, table, ["user:cy"], now) is None  # type: ignore[arg-type]
        assert reserve_attempt(conn, table, ["user:cy"], POLICY, now) == 5  # type: ignore[arg-type]


def test_concurrent_attempts_never_exceed_the_limit(lock_db: tuple[Engine, object]) -> None:
    """40 attempts at once on separate connections: exactly max_failures get through."""
    engine, table = lock_db
    now = _now()
    start = threading.Barrier(40)
    outcomes: list[str] = []
    guard = threading.Lock()

    def attempt() -> None:
        start.wait()
        try:
            with engine.begin() as conn:
                reserve_attempt(conn, table, ["user:dee"], POLICY, now)  # type: ignore[arg-type]
            result = "evaluated"
        except SignInLocked:
            result = "locked"
        with guard:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes).count("evaluated") == POLICY.max_failures
    assert len(outcomes) == 40


def test_slowdown_grows_after_the_first_miss() -> None:
    policy = LockoutPolicy(max_failures=5, lockout_s=60, slowdown_s=0.5)
    assert [policy.delay_s(n) for n in (1, 2, 3, 4)] == [0.0, 0.5, 1.0, 2.0]
    assert policy.delay_s(30) == 10.0


def test_failures_charged_after_the_fact_lock_at_the_limit(
    lock_db: tuple[Engine, object],
) -> None:
    engine, table = lock_db
    now = _now()
    for n in range(1, 5):
        with engine.begin() as conn:
            assert record_failure(conn, table, ["client:c"], POLICY, now) == n  # type: ignore[arg-type]
            check_unlocked(conn, table, ["client:c"], now)  # type: ignore[arg-type]
    with engine.begin() as conn:
        assert record_failure(conn, table, ["client:c"], POLICY, now) == 5  # type: ignore[arg-type]
    with pytest.raises(SignInLocked), engine.begin() as conn:
        check_unlocked(conn, table, ["client:c"], now)  # type: ignore[arg-type]
