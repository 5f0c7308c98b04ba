"""Offline sign-in against the argon2 hashes central pushed, and bearer tokens.

- Passwords are verified through a ``PasswordGate`` (``outpost.passwords``):
  at most ``lan.signin_concurrency`` argon2 checks at once (64 MiB each),
  a short wait line, then 503 with ``Retry-After``; unknown users cost the
  same as known ones and take their turn too.
- Each attempt is reserved against the user's lockout key *before* its
  password is checked (one transaction in the store's writer), so at most
  ``lan.signin_max_failures`` guesses per user are ever evaluated per lock
  period, concurrent or not; later guesses are slowed down (exponential,
  capped). The client address is charged for failures only (a crew signing
  in from one tablet does not lock it) and refused while locked. A right
  password clears the user's key.
- Tokens are 256-bit random strings; only their SHA-256 is stored.
- Authenticated principals are cached for a few seconds so a request does not
  cost a database read; a user push that ends sessions clears the cache, and
  sign-out and the database stay the truth.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gateway.api.errors import ApiError
from gateway.store import Store
from gateway.store.sessions import (
    ClearSignInAttempts,
    EndSession,
    FindSession,
    FindUser,
    OpenSession,
    RecordSignInFailure,
    RefundSignIn,
    ReserveSignIn,
)
from outpost.passwords import LockoutPolicy, PasswordGate, PasswordsBusy, SignInLocked
from outpost.times import utcnow

logger = logging.getLogger(__name__)

MAX_SLOWDOWN_S = 10.0
CACHE_TTL_S = 5.0
CACHE_MAX = 10_000
FAILURE_MEMORY_S = 15 * 60.0  # failures older than this (and unlocked) are forgotten


@dataclass(frozen=True, slots=True)
class Principal:
    """The signed-in user behind a token."""

    username: str
    display_name: str | None
    token_hash: str
    expires_at: datetime
    site_lead: bool = False  # granted by central for this gateway: sees the whole gateway

    def public(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "display_name": self.display_name,
            "site_lead": self.site_lead,
        }


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


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
        gate: PasswordGate | None = None,
    ) -> None:
        self._store = store
        self._ttl = timedelta(seconds=token_ttl_s)
        self.policy = LockoutPolicy(
            max_failures=max_failures,
            lockout_s=lockout_s,
            slowdown_s=slowdown_s,
            max_slowdown_s=MAX_SLOWDOWN_S,
            forget_s=FAILURE_MEMORY_S,
        )
        self.gate = gate or PasswordGate()
        self._cache: dict[str, tuple[Principal, float]] = {}

    # --- sign-in --------------------------------------------------------------

    async def async_sign_in(
        self, username: str, password: str, client: str
    ) -> tuple[str, Principal]:
        user_key, client_key = f"user:{username}", f"client:{client}"
        keys = (user_key,)
        now = utcnow()
        policy = self.policy

        try:
            attempt = await self._store.async_write(
                ReserveSignIn(user_key, client_key, policy, now)
            )
        except SignInLocked as exc:
            raise _locked(exc.until, now) from None
        delay = policy.delay_s(attempt)
        if delay:
            await asyncio.sleep(delay)
        row = await self._store.async_read(FindUser(username))
        try:
            ok = await self.gate.async_verify(row.password_hash if row else None, password)
        except PasswordsBusy as exc:
            # Never evaluated: the guess is given back, the device retries.
            await self._store.async_write(RefundSignIn(keys, policy))
            logger.warning(
                "sign-in for user %r from %s refused: password checks busy", username, client
            )
            raise ApiError(
                503,
                "signin_busy",
                "The gateway is checking many sign-ins right now; try again in a few seconds.",
                headers={"Retry-After": str(exc.retry_after_s)},
            ) from None
        if not ok or row is None:
            logger.info("failed sign-in for user %r from %s", username, client)
            failures = await self._store.async_write(
                RecordSignInFailure((client_key,), policy, utcnow())
            )
            if max(attempt, failures) >= policy.max_failures:
                raise _locked(now + timedelta(seconds=policy.lockout_s), utcnow())
            raise ApiError(401, "bad_credentials", "The username or password is wrong.")
        if not row.offline:
            await self._store.async_write(ClearSignInAttempts(keys))
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
            site_lead=bool(row.site_lead),
        )
        opened = await self._store.async_write(
            OpenSession(
                keys,
                principal.username,
                principal.token_hash,
                principal.expires_at,
                client,
                row.password_hash,
            )
        )
        if not opened:  # a user push changed this user while we checked
            raise ApiError(401, "bad_credentials", "The username or password is wrong.")
        logger.info("user %r signed in from %s", row.username, client)
        return token, principal

    async def async_sign_out(self, principal: Principal) -> None:
        self._cache.pop(principal.token_hash, None)
        await self._store.async_write(EndSession(principal.token_hash))

    # --- bearer tokens --------------------------------------------------------

    async def async_authenticate(self, token: str) -> Principal:
        token_hash = hash_token(token)
        cached = self._cache.get(token_hash)
        if cached is not None and time.monotonic() - cached[1] < CACHE_TTL_S:
            principal = cached[0]
        else:
            row = await self._store.async_read(FindSession(token_hash))
            if row is None:
                self._cache.pop(token_hash, None)
                raise ApiError(401, "invalid_token", "Your session has ended; sign in again.")
            principal = Principal(
                row.username,
                row.display_name,
                token_hash,
                row.expires_at,
                site_lead=bool(row.site_lead),
            )
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
