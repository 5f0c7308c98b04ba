"""Password work for both sides: argon2 hashing under a bound, and an atomic lockout.

Hashing. argon2-cffi's default costs 64 MiB and most of a core per hash, and
the cost is stored in the hash, so a gateway verifying central's hashes pays
it too. Forty sign-ins at once took a gateway from 86 to 471 MiB; sixty
unknown usernames did the same without any account. A ``PasswordGate`` runs
at most ``max_concurrent`` hashes at once (in its own small thread pool, so
waiting never starves the event loop's executor); up to ``max_waiting``
more wait at most ``wait_s`` for a turn; anything beyond is refused at once
with ``PasswordsBusy`` (an HTTP layer answers 503 with ``Retry-After``).
Unknown users are verified against a dummy hash through the same gate: they
cost the same, and cannot bypass the bound.

- ``gate = PasswordGate(max_concurrent=2, max_waiting=8, wait_s=5.0)``
- ``await gate.async_verify(hash_or_None, password) -> bool`` (False for None)
- ``await gate.async_hash(password) -> str``
- ``gate.verify(...)`` / ``gate.hash(...)``: blocking, for code already in a
  worker thread (e.g. inside a database transaction)
- ``hash_password(pw)`` / ``verify_password(hash, pw)``: blocking, through
  the process-wide ``default_gate()``
- ``gate.close()`` when the owner stops (an app's cleanup).

Lockout. A throttle that is read before the check and written after it lets
concurrent guesses through (39 wrong and one right password sent at once: 4
evaluated and the right one got in). Here an attempt is *reserved* --
counted as a failure -- before the password is verified, by one conditional
upsert per key inside the caller's transaction, so at most
``policy.max_failures`` guesses per key per lock period are ever evaluated,
concurrent or not, on SQLite and PostgreSQL alike (the row lock of
``ON CONFLICT DO UPDATE`` serialises them). A right password clears the keys;
a guess that could not be evaluated (the gate was busy) is refunded.

- ``table = lockout_table(metadata, "signin_failures")``: the columns
  ``key`` (``user:<name>``, ``client:<address>``), ``failures``, ``last_at``,
  ``locked_until`` (the gateway's store has this table since schema 1).
- ``n = reserve_attempt(conn, table, keys, policy, now)``: this attempt's number
  in the current period (1 = first), or ``SignInLocked(until)``; raise it
  inside the transaction so an earlier key's reservation rolls back too.
- ``clear_attempts(conn, table, keys)`` after a right password;
  ``refund_attempt(conn, table, keys, policy)`` when it was not evaluated.
- ``record_failure(conn, table, keys, policy, now)`` charges a wrong password
  to keys that successes must not use up (a client address many people sign
  in from); ``check_unlocked(conn, table, keys, now)`` refuses a locked one.
- ``policy.delay_s(n)``: the slow-down before evaluating attempt ``n``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.types import TypeEngine

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_PASSWORD_CHARS = 1024  # longer is refused before any hashing


class PasswordsBusy(Exception):
    """Too many password hashes at once; try again after ``retry_after_s``."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"password checks are busy; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class SignInLocked(Exception):
    """Too many attempts for one of the keys; refused until ``until``."""

    def __init__(self, until: datetime, key: str) -> None:
        super().__init__(f"sign-in locked until {until.isoformat()}")
        self.until = until
        self.key = key

    def retry_after_s(self, now: datetime) -> int:
        return max(1, int((self.until - now).total_seconds()) + 1)


# --- bounded hashing ------------------------------------------------------------


class PasswordGate:
    """At most ``max_concurrent`` argon2 operations at once; a short, bounded wait line."""

    def __init__(
        self,
        *,
        max_concurrent: int = 2,
        max_waiting: int = 8,
        wait_s: float = 5.0,
        hasher: PasswordHasher | None = None,
    ) -> None:
        if max_concurrent < 1 or max_waiting < 0 or wait_s <= 0:
            raise ValueError("max_concurrent >= 1, max_waiting >= 0 and wait_s > 0")
        self.max_concurrent = max_concurrent
        self.max_waiting = max_waiting
        self.wait_s = wait_s
        self.hasher = hasher or PasswordHasher()
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._lock = threading.Lock()
        self._inside = 0  # admitted: running or waiting for a slot
        self._pool: ThreadPoolExecutor | None = None
        self.peak_running = 0  # the most seen hashing at once (tests, metrics)
        self._running = 0
        self.refused = 0  # callers turned away busy
        self.runs = 0  # argon2 operations run

    @cached_property
    def _dummy(self) -> str:
        # Computed once, outside any request's timing; same cost parameters.
        return self.hasher.hash(secrets.token_urlsafe(16))

    @property
    def retry_after_s(self) -> int:
        return max(1, round(self.wait_s))

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                # One thread per admitted caller: waiting happens here, never
                # in the event loop's default executor.
                self._pool = ThreadPoolExecutor(max_workers=self.max_concurrent + self.max_waiting)
            return self._pool

    def _admit(self) -> None:
        with self._lock:
            if self._inside >= self.max_concurrent + self.max_waiting:
                self.refused += 1
                raise PasswordsBusy(self.retry_after_s)
            self._inside += 1

    def _leave(self) -> None:
        with self._lock:
            self._inside -= 1

    def _run_admitted(self, fn: Callable[[], T], deadline: float) -> T:
        try:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._slots.acquire(timeout=remaining):
                with self._lock:
                    self.refused += 1
                raise PasswordsBusy(self.retry_after_s)
            try:
                with self._lock:
                    self._running += 1
                    self.runs += 1
                    self.peak_running = max(self.peak_running, self._running)
                return fn()
            finally:
                with self._lock:
                    self._running -= 1
                self._slots.release()
        finally:
            self._leave()

    def run(self, fn: Callable[[], T]) -> T:
        """Blocking: run ``fn`` (one argon2 operation) within the bound."""
        self._admit()
        return self._run_admitted(fn, time.monotonic() + self.wait_s)

    async def async_run(self, fn: Callable[[], T]) -> T:
        self._admit()
        deadline = time.monotonic() + self.wait_s
        try:
            future = self._executor().submit(self._run_admitted, fn, deadline)
        except BaseException:
            self._leave()
            raise
        return await asyncio.wrap_future(future)

    def _verify(self, password_hash: str | None, password: str) -> bool:
        if len(password) > MAX_PASSWORD_CHARS:
            return False
        try:
            ok = bool(self.hasher.verify(password_hash or self._dummy, password))
        except (VerificationError, InvalidHashError):
            return False
        return ok and password_hash is not None

    def verify(self, password_hash: str | None, password: str) -> bool:
        """Blocking verify; ``None`` (an unknown user) costs a dummy hash and is False."""
        return self.run(lambda: self._verify(password_hash, password))

    async def async_verify(self, password_hash: str | None, password: str) -> bool:
        return await self.async_run(lambda: self._verify(password_hash, password))

    def hash(self, password: str) -> str:
        return self.run(lambda: self.hasher.hash(password))

    async def async_hash(self, password: str) -> str:
        return await self.async_run(lambda: self.hasher.hash(password))

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=False)


_default: PasswordGate | None = None
_default_lock = threading.Lock()


def default_gate() -> PasswordGate:
    """The process-wide gate behind ``hash_password``/``verify_password``."""
    global _default
    with _default_lock:
        if _default is None:
            _default = PasswordGate()
        return _default


def hash_password(password: str) -> str:
    """Blocking: an argon2id hash of ``password`` (through the process-wide gate)."""
    return default_gate().hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Blocking: does ``password`` match the argon2 hash? (through the process-wide gate)."""
    return default_gate().verify(password_hash, password)


# --- atomic lockout -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """``max_failures`` guesses per key, then refused for ``lockout_s``.

    Failures nobody repeated for ``forget_s`` (and not locked) are forgotten.
    Attempt ``n`` first waits ``slowdown_s * 2**(n-2)`` (capped), so guesses
    after a first miss slow down.
    """

    max_failures: int
    lockout_s: float
    slowdown_s: float = 0.0
    max_slowdown_s: float = 10.0
    forget_s: float = 900.0

    def delay_s(self, attempt: int) -> float:
        if attempt < 2 or not self.slowdown_s:
            return 0.0
        return float(min(self.slowdown_s * 2 ** (attempt - 2), self.max_slowdown_s))


def lockout_table(metadata: MetaData, name: str = "signin_failures", **time_type: Any) -> Table:
    """The lockout's table; ``time_type={"type_": YourUtcDateTime}`` to choose its time column type."""
    kind: TypeEngine[Any] | type[TypeEngine[Any]] = time_type.get("type_", DateTime(timezone=True))
    return Table(
        name,
        metadata,
        Column("key", String(300), primary_key=True),  # "user:<name>" or "client:<address>"
        Column("failures", Integer, nullable=False),  # attempts counted this period
        Column("last_at", kind, nullable=False),
        Column("locked_until", kind),
    )


def _insert(conn: Connection, table: Table) -> Any:
    name = conn.dialect.name
    if name == "sqlite":
        return sqlite_insert(table)
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert  # central only

        return pg_insert(table)
    raise NotImplementedError(f"the lockout needs SQLite or PostgreSQL, not {name}")


def _upsert_attempt(
    conn: Connection,
    table: Table,
    key: str,
    policy: LockoutPolicy,
    now: datetime,
    *,
    only_if_allowed: bool,
) -> int | None:
    """Count one attempt against ``key``; its number, or None when refused (only_if_allowed)."""
    c = table.c
    lock_at = now + timedelta(seconds=policy.lockout_s)
    # Bound with the column's own type: a store may keep times as text.
    lock_value = literal(lock_at, c.locked_until.type)
    forget_before = _forget_before(policy, now)
    fresh = or_(
        and_(c.locked_until.is_not(None), c.locked_until <= now),
        and_(c.locked_until.is_(None), c.last_at < forget_before),
    )
    count = case((fresh, 1), else_=c.failures + 1)
    stmt = _insert(conn, table).values(
        key=key,
        failures=1,
        last_at=now,
        locked_until=lock_at if policy.max_failures <= 1 else None,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[c.key],
        set_={
            "failures": count,
            "last_at": now,
            # A lock in force stays as it is; reaching the limit starts one.
            "locked_until": case(
                (and_(c.locked_until.is_not(None), c.locked_until > now), c.locked_until),
                (count >= policy.max_failures, lock_value),
                else_=None,
            ),
        },
        where=(
            or_(fresh, and_(c.locked_until.is_(None), c.failures < policy.max_failures))
            if only_if_allowed
            else None
        ),
    )
    # RETURNING (SQLite >= 3.35, PostgreSQL): no row when the WHERE refused it.
    n = conn.execute(stmt.returning(c.failures)).scalar_one_or_none()
    return None if n is None else int(n)


def _forget_before(policy: LockoutPolicy, now: datetime) -> datetime:
    return now - timedelta(seconds=max(policy.forget_s, 2 * policy.lockout_s))


def reserve_attempt(
    conn: Connection,
    table: Table,
    keys: Sequence[str],
    policy: LockoutPolicy,
    now: datetime,
) -> int:
    """Count this attempt against every key before it is evaluated; its number, or raise.

    Raises ``SignInLocked`` when a key is locked or has used its guesses: the
    caller's transaction must roll back (raising does that in ours), so no key
    keeps a reservation from a refused attempt.
    """
    c = table.c
    # Keep the table small: forget old, unlocked keys.
    conn.execute(
        delete(table).where(
            c.last_at < _forget_before(policy, now),
            or_(c.locked_until.is_(None), c.locked_until < now),
        )
    )
    attempt = 0
    for key in keys:
        n = _upsert_attempt(conn, table, key, policy, now, only_if_allowed=True)
        if n is None:
            until = conn.execute(select(c.locked_until).where(c.key == key)).scalar_one_or_none()
            lock_at = now + timedelta(seconds=policy.lockout_s)
            raise SignInLocked(_aware(until) if isinstance(until, datetime) else lock_at, key)
        attempt = max(attempt, n)
    return attempt


def record_failure(
    conn: Connection,
    table: Table,
    keys: Sequence[str],
    policy: LockoutPolicy,
    now: datetime,
) -> int:
    """Charge a failed attempt to ``keys`` after the fact (e.g. a client address).

    For keys that must not be charged for attempts that succeed -- many people
    signing in from one address -- while ``reserve_attempt`` holds the
    per-user bound. Returns the highest count; a key reaching the limit locks.
    """
    counts = [
        _upsert_attempt(conn, table, key, policy, now, only_if_allowed=False) or 0 for key in keys
    ]
    return max(counts, default=0)


def check_unlocked(conn: Connection, table: Table, keys: Sequence[str], now: datetime) -> None:
    """Raise ``SignInLocked`` when any of ``keys`` is locked now (a read)."""
    until = locked_until(conn, table, keys, now)
    if until is not None:
        raise SignInLocked(until, ",".join(keys))


def clear_attempts(conn: Connection, table: Table, keys: Sequence[str]) -> None:
    """A right password: the keys start afresh."""
    conn.execute(delete(table).where(table.c.key.in_(list(keys))))


def refund_attempt(
    conn: Connection, table: Table, keys: Sequence[str], policy: LockoutPolicy
) -> None:
    """The reserved attempt was never evaluated (busy): give the guess back."""
    c = table.c
    left = (
        func.max(c.failures - 1, 0)
        if conn.dialect.name == "sqlite"
        else func.greatest(c.failures - 1, 0)
    )
    conn.execute(
        update(table)
        .where(c.key.in_(list(keys)))
        .values(
            failures=left,
            locked_until=case((left >= policy.max_failures, c.locked_until), else_=None),
        )
    )


def locked_until(
    conn: Connection, table: Table, keys: Sequence[str], now: datetime
) -> datetime | None:
    """A quick read: the latest lock among ``keys`` still in force, if any."""
    until = conn.execute(
        select(func.max(table.c.locked_until)).where(
            table.c.key.in_(list(keys)), table.c.locked_until > now
        )
    ).scalar_one_or_none()
    return _aware(until) if isinstance(until, datetime) else None


def _aware(value: datetime) -> datetime:
    # SQLite's DateTime reads back naive; every time here is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
