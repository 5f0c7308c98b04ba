"""Offline sign-in against the argon2 hashes central pushed, and bearer tokens.

- Passwords are verified in a thread (argon2 is slow on purpose); unknown
  users cost the same as known ones.
- Tokens are 256-bit random strings; only their SHA-256 is stored.
- Failed sign-ins are counted per user and per client address: each further
  attempt is slowed down (exponential, capped), and after
  ``max_failures`` the key is refused for ``lockout_s`` with a clear message.
- Authenticated principals are cached for a few seconds so a request does not
  cost a database read; sign-out and the database stay the truth.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Connection, delete, or_, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from gateway.api.errors import ApiError
from gateway.store import Store
from gateway.store.ops import utcnow
from gateway.store.schema import sessions, signin_failures, users

logger = logging.getLogger(__name__)

_hasher = PasswordHasher()
MAX_SLOWDOWN_S = 10.0
CACHE_TTL_S = 5.0
CACHE_MAX = 10_000
FAILURE_MEMORY = timedelta(minutes=15)  # failures older than this (and unlocked) are forgotten


@dataclass(frozen=True, slots=True)
class Principal:
    """The signed-in user behind a token."""

    username: str
    display_name: str | None
    token_hash: str
    expires_at: datetime

    def public(self) -> dict[str, Any]:
        return {"username": self.username, "display_name": self.display_name}


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str) -> str:
    """An argon2 hash (central does this; tests and demos use it to seed users)."""
    return _hasher.hash(password)


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def verify_password(password_hash: str | None, password: str) -> bool:
    """Blocking: verify ``password`` against an argon2 hash (a dummy one when None)."""
    try:
        return (
            _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
        )
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True, slots=True)
class _Throttle:
    failures: int
    locked_until: datetime | None


class Auth:
    """Sign-in, sign-out and token checks for the LAN API."""

    def __init__(
        self,
        store: Store,
        *,
        token_ttl_s: int,
        max_failures: int,
        lockout_s: int,
        slowdown_s: float,
    ) -> None:
        self._store = store
        self._ttl = timedelta(seconds=token_ttl_s)
        self._max_failures = max_failures
        self._lockout = timedelta(seconds=lockout_s)
        self._slowdown_s = slowdown_s
        self._cache: dict[str, tuple[Principal, float]] = {}

    # --- sign-in --------------------------------------------------------------

    async def async_sign_in(
        self, username: str, password: str, client: str
    ) -> tuple[str, Principal]:
        keys = (f"user:{username}", f"client:{client}")
        now = utcnow()
        throttle = await self._store.async_read(lambda c: _throttle(c, keys, now))
        if throttle.locked_until is not None and throttle.locked_until > now:
            raise _locked(throttle.locked_until, now)
        if throttle.failures and self._slowdown_s:
            delay = min(self._slowdown_s * 2 ** (throttle.failures - 1), MAX_SLOWDOWN_S)
            await asyncio.sleep(delay)
        row = await self._store.async_read(
            lambda c: c.execute(select(users).where(users.c.username == username)).first()
        )
        ok = await asyncio.get_running_loop().run_in_executor(
            None, verify_password, row.password_hash if row else None, password
        )
        if not ok or row is None:
            locked_until = await self._store.async_write(
                lambda c: _record_failure(c, keys, self._max_failures, self._lockout)
            )
            logger.info("failed sign-in for user %r from %s", username[:64], client)
            if locked_until is not None:
                raise _locked(locked_until, utcnow())
            raise ApiError(401, "bad_credentials", "The username or password is wrong.")
        if not row.offline:
            raise ApiError(
                403,
                "offline_not_permitted",
                "This user may not work offline; ask a central admin to allow it.",
            )
        token = secrets.token_urlsafe(32)
        principal = Principal(
            username=row.username,
            display_name=row.display_name,
            token_hash=hash_token(token),
            expires_at=utcnow() + self._ttl,
        )
        await self._store.async_write(lambda c: _open_session(c, keys, principal, client))
        logger.info("user %r signed in from %s", row.username, client)
        return token, principal

    async def async_sign_out(self, principal: Principal) -> None:
        self._cache.pop(principal.token_hash, None)
        await self._store.async_write(
            lambda c: c.execute(
                delete(sessions).where(sessions.c.token_hash == principal.token_hash)
            )
        )

    # --- bearer tokens --------------------------------------------------------

    async def async_authenticate(self, token: str) -> Principal:
        token_hash = hash_token(token)
        cached = self._cache.get(token_hash)
        if cached is not None and time.monotonic() - cached[1] < CACHE_TTL_S:
            principal = cached[0]
        else:
            found = await self._store.async_read(lambda c: _session(c, token_hash))
            if found is None:
                self._cache.pop(token_hash, None)
                raise ApiError(401, "invalid_token", "Your session has ended; sign in again.")
            principal = found
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            self._cache[token_hash] = (principal, time.monotonic())
        if principal.expires_at <= utcnow():
            self._cache.pop(token_hash, None)
            raise ApiError(401, "token_expired", "Your session has expired; sign in again.")
        return principal

    def forget_cached(self) -> None:
        """Drop cached principals (after users or sessions changed behind our back)."""
        self._cache.clear()


def _locked(until: datetime, now: datetime) -> ApiError:
    seconds = max(1, int((until - now).total_seconds()) + 1)
    minutes = (seconds + 59) // 60
    return ApiError(
        429,
        "signin_locked",
        f"Too many failed sign-ins; try again in {minutes} minute{'s' if minutes != 1 else ''}.",
        headers={"Retry-After": str(seconds)},
    )


def _throttle(conn: Connection, keys: tuple[str, ...], now: datetime) -> _Throttle:
    rows = conn.execute(select(signin_failures).where(signin_failures.c.key.in_(keys))).all()
    failures = 0
    locked: datetime | None = None
    for row in rows:
        if row.locked_until is not None and row.locked_until <= now:
            continue  # the lock ran out: start afresh
        failures = max(failures, row.failures)
        if row.locked_until is not None and (locked is None or row.locked_until > locked):
            locked = row.locked_until
    return _Throttle(failures, locked)


def _record_failure(
    conn: Connection, keys: tuple[str, ...], max_failures: int, lockout: timedelta
) -> datetime | None:
    now = utcnow()
    # Forget failures nobody repeated for a while (bounded table, fresh start).
    conn.execute(
        delete(signin_failures).where(
            signin_failures.c.last_at < now - max(2 * lockout, FAILURE_MEMORY),
            or_(signin_failures.c.locked_until.is_(None), signin_failures.c.locked_until < now),
        )
    )
    locked: datetime | None = None
    for key in keys:
        row = conn.execute(select(signin_failures).where(signin_failures.c.key == key)).first()
        count = 1
        if row is not None and not (row.locked_until is not None and row.locked_until <= now):
            count = row.failures + 1
        until = now + lockout if count >= max_failures else None
        stmt = sqlite_insert(signin_failures).values(
            key=key, failures=count, last_at=now, locked_until=until
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[signin_failures.c.key],
                set_={"failures": count, "last_at": now, "locked_until": until},
            )
        )
        if until is not None:
            locked = until
    return locked


def _open_session(
    conn: Connection, keys: tuple[str, ...], principal: Principal, client: str
) -> None:
    now = utcnow()
    conn.execute(delete(signin_failures).where(signin_failures.c.key.in_(keys)))
    conn.execute(delete(sessions).where(sessions.c.expires_at < now))
    conn.execute(
        sessions.insert().values(
            token_hash=principal.token_hash,
            username=principal.username,
            client=client[:200],
            created_at=now,
            expires_at=principal.expires_at,
        )
    )


def _session(conn: Connection, token_hash: str) -> Principal | None:
    row = conn.execute(
        select(sessions.c.expires_at, users.c.username, users.c.display_name)
        .join(users, users.c.username == sessions.c.username)
        .where(sessions.c.token_hash == token_hash, users.c.offline.is_(True))
    ).first()
    if row is None:
        return None
    return Principal(row.username, row.display_name, token_hash, row.expires_at)


def expire_sessions(conn: Connection, username: str, at: datetime) -> None:
    """End a user's sessions (tests and admin tools)."""
    conn.execute(update(sessions).where(sessions.c.username == username).values(expires_at=at))
