"""Signing in on the gateway: the users' hashes, sign-in attempts, sessions.

Tasks for ``gateway/auth.py`` (which checks passwords and caches principals;
the SQL is here). Each attempt is reserved against the user's lockout key
before its password is checked (``ReserveSignIn``, one writer transaction),
so concurrent guesses cannot overtake the limit. Tokens are stored only as
their SHA-256.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, select, update

from gateway.store.schema import sessions, signin_failures, users
from gateway.store.tasks import ReadTask, WriteTask
from outpost.passwords import (
    LockoutPolicy,
    check_unlocked,
    clear_attempts,
    record_failure,
    refund_attempt,
    reserve_attempt,
)
from outpost.times import utcnow


@dataclass(frozen=True, slots=True)
class ReserveSignIn(WriteTask[int]):
    """Count this attempt against the user's key before it is evaluated; its number.

    Raises ``SignInLocked`` (its savepoint keeps no reservation) when the
    client address or the user is locked.
    """

    user_key: str
    client_key: str
    policy: LockoutPolicy
    now: datetime

    def run(self, conn: Connection) -> int:
        check_unlocked(conn, signin_failures, [self.client_key], self.now)
        return reserve_attempt(conn, signin_failures, [self.user_key], self.policy, self.now)


@dataclass(frozen=True, slots=True)
class RefundSignIn(WriteTask[None]):
    """The reserved attempt was never evaluated (password checks busy): give it back."""

    keys: tuple[str, ...]
    policy: LockoutPolicy

    def run(self, conn: Connection) -> None:
        refund_attempt(conn, signin_failures, self.keys, self.policy)


@dataclass(frozen=True, slots=True)
class RecordSignInFailure(WriteTask[int]):
    """Charge a failed attempt to ``keys`` (the client address); the highest count."""

    keys: tuple[str, ...]
    policy: LockoutPolicy
    now: datetime

    def run(self, conn: Connection) -> int:
        return record_failure(conn, signin_failures, self.keys, self.policy, self.now)


@dataclass(frozen=True, slots=True)
class ClearSignInAttempts(WriteTask[None]):
    """The keys start afresh (a right password)."""

    keys: tuple[str, ...]

    def run(self, conn: Connection) -> None:
        clear_attempts(conn, signin_failures, self.keys)


@dataclass(frozen=True, slots=True)
class FindUser(ReadTask[Any]):
    """The pushed user's row (password hash, offline, display name, site lead), or None."""

    username: str

    def run(self, conn: Connection) -> Any:
        return conn.execute(select(users).where(users.c.username == self.username)).first()


@dataclass(frozen=True, slots=True)
class OpenSession(WriteTask[bool]):
    """Record the session unless the user's hash changed (or they lost offline) meanwhile.

    Clears the user's sign-in attempts and drops expired sessions in the same
    transaction. False: a user push changed this user while the password was
    checked.
    """

    keys: tuple[str, ...]
    username: str
    token_hash: str
    expires_at: datetime
    client: str
    password_hash: str

    def run(self, conn: Connection) -> bool:
        current = conn.execute(
            select(users.c.password_hash, users.c.offline).where(users.c.username == self.username)
        ).first()
        if current is None or current.password_hash != self.password_hash or not current.offline:
            return False
        now = utcnow()
        clear_attempts(conn, signin_failures, self.keys)
        conn.execute(delete(sessions).where(sessions.c.expires_at < now))
        conn.execute(
            sessions.insert().values(
                token_hash=self.token_hash,
                username=self.username,
                client=self.client[:200],
                created_at=now,
                expires_at=self.expires_at,
            )
        )
        return True


@dataclass(frozen=True, slots=True)
class EndSession(WriteTask[None]):
    """Sign-out: the session with this token hash ends."""

    token_hash: str

    def run(self, conn: Connection) -> None:
        conn.execute(delete(sessions).where(sessions.c.token_hash == self.token_hash))


@dataclass(frozen=True, slots=True)
class FindSession(ReadTask[Any]):
    """The live session's user (username, display_name, site_lead, expires_at), or None.

    Only a user who may still work offline has a session that counts.
    """

    token_hash: str

    def run(self, conn: Connection) -> Any:
        return conn.execute(
            select(sessions.c.expires_at, users.c.username, users.c.display_name, users.c.site_lead)
            .join(users, users.c.username == sessions.c.username)
            .where(sessions.c.token_hash == self.token_hash, users.c.offline.is_(True))
        ).first()


@dataclass(frozen=True, slots=True)
class ExpireUserSessions(WriteTask[None]):
    """End a user's sessions at ``at`` (tests and admin tools)."""

    username: str
    at: datetime

    def run(self, conn: Connection) -> None:
        expire_sessions(conn, self.username, self.at)


def expire_sessions(conn: Connection, username: str, at: datetime) -> None:
    """End a user's sessions (tests and admin tools)."""
    conn.execute(update(sessions).where(sessions.c.username == username).values(expires_at=at))
