"""Who a request comes from: sign-in, sessions, API tokens, the admin token.

- A person signs in with username and password (argon2). The page gets a
  server-side session in a cookie; ``POST /api/v1/session`` gets a bearer
  token. Both are rows of ``sessions`` (only the token's SHA-256 is kept),
  ended by sign-out, by idle expiry (``platform.session_idle_s``), at their
  absolute end, and at once when the person is disabled or their password
  changes.
- A person's API tokens (``api_tokens``) are for scripts that act as them;
  they are created and revoked by the person or an admin.
- The bridge's admin token is for scripts; it acts as an admin and the audit
  log says "the admin token".
- Guesses are counted per user *before* the password is checked, by the
  lockout the gateway uses too (``outpost.passwords.reserve_attempt``: one
  conditional upsert, atomic on SQLite and PostgreSQL): at most
  ``signin_max_failures`` guesses per user are ever evaluated per lock
  period, however many arrive at once. A success clears the user's count.
  Failed guesses are also counted per client address (``CLIENT_FACTOR``
  times as many allowed), so one address cannot sweep many usernames.

Everything here that touches the database is blocking (DB threads).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from cloud_bridge.errors import CentralError
from cloud_bridge.models import ApiToken, User, UserSite, WebSession, signin_failures, utcnow
from cloud_bridge.permissions import Actor
from outpost.passwords import (
    LockoutPolicy,
    SignInLocked,
    check_unlocked,
    clear_attempts,
    record_failure,
    refund_attempt,
    reserve_attempt,
)

SEEN_EVERY = timedelta(seconds=30)  # a session's seen_at is written at most this often
CLIENT_FACTOR = 4  # one address may fail this many times more than one user (shared NAT)
TOKEN_PREFIX = "op_"  # a person's API token: op_<id>_<secret>


@dataclass(frozen=True)
class Policy:
    """The sign-in and session limits (from ``[platform]`` in bridge.toml)."""

    session_idle_s: int = 30 * 60
    session_max_s: int = 12 * 3600
    api_session_s: int = 12 * 3600
    max_failures: int = 5
    failure_window_s: int = 15 * 60
    lockout_s: int = 15 * 60


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- the sign-in throttle: the shared lockout (outpost/passwords.py) --------------


def _lockouts(policy: Policy) -> tuple[LockoutPolicy, LockoutPolicy]:
    """The per-user and the per-address limits (an address: ``CLIENT_FACTOR`` x as many)."""
    user = LockoutPolicy(
        max_failures=policy.max_failures,
        lockout_s=policy.lockout_s,
        forget_s=policy.failure_window_s,
    )
    return user, dataclasses.replace(user, max_failures=policy.max_failures * CLIENT_FACTOR)


def reserve_guess(session: Session, username: str, client: str, policy: Policy) -> None:
    """Count one guess for ``username`` before it is checked (``reserve_attempt``).

    Raises ``signin_locked`` (429, with the seconds to wait) when the user or
    the client address is locked; the transaction then rolls back, so a
    refused guess reserves nothing. The guess that reaches the limit is still
    checked; the next one is refused. (The address is charged only for
    guesses that failed, :func:`note_failure`: many people signing in at
    once from one office must not lock it.)
    """
    now = utcnow()
    conn = session.connection()
    try:
        check_unlocked(conn, signin_failures, [f"client:{client}"], now)
        reserve_attempt(conn, signin_failures, [f"user:{username}"], _lockouts(policy)[0], now)
    except SignInLocked as exc:
        raise locked_error(exc.until, now) from None


def note_failure(session: Session, client: str, policy: Policy) -> None:
    """Charge a failed guess to the client address (limit: ``CLIENT_FACTOR`` x the user's)."""
    conn = session.connection()
    record_failure(conn, signin_failures, [f"client:{client}"], _lockouts(policy)[1], utcnow())


def clear_guesses(session: Session, username: str) -> None:
    """A right password: the user's count starts afresh (the address's does not)."""
    clear_attempts(session.connection(), signin_failures, [f"user:{username}"])


def refund_guess(session: Session, username: str, policy: Policy) -> None:
    """The guess was never checked (the password slots were busy): give it back."""
    refund_attempt(
        session.connection(), signin_failures, [f"user:{username}"], _lockouts(policy)[0]
    )


def locked_error(until: datetime, now: datetime) -> CentralError:
    seconds = max(1, int((until - now).total_seconds()) + 1)
    minutes = (seconds + 59) // 60
    return CentralError(
        "signin_locked",
        f"Too many failed sign-ins; try again in {minutes} minute{'s' if minutes != 1 else ''}.",
        429,
        headers={"Retry-After": str(seconds)},
    )


def bad_credentials() -> CentralError:
    return CentralError("bad_credentials", "The username or password is wrong.", 401)


# --- sessions ---------------------------------------------------------------------


def open_session(
    session: Session,
    user: User,
    kind: Literal["web", "api"],
    client: str,
    policy: Policy,
) -> tuple[str, WebSession]:
    """A new session for ``user``; returns the token (shown once) and the row."""
    now = utcnow()
    session.execute(delete(WebSession).where(WebSession.expires_at < now))
    token = secrets.token_urlsafe(32)
    ttl = policy.session_max_s if kind == "web" else policy.api_session_s
    row = WebSession(
        token_hash=hash_token(token),
        username=user.username,
        kind=kind,
        csrf=secrets.token_urlsafe(24),
        client=client[:200],
        created_at=now,
        seen_at=now,
        expires_at=now + timedelta(seconds=ttl),
    )
    session.add(row)
    session.flush()
    return token, row


def end_session(session: Session, token_hash: str) -> None:
    session.execute(delete(WebSession).where(WebSession.token_hash == token_hash))


def end_sessions_of(session: Session, username: str, keep: str | None = None) -> int:
    """End every session of ``username`` (but ``keep``); returns how many ended."""
    stmt = delete(WebSession).where(WebSession.username == username)
    if keep is not None:
        stmt = stmt.where(WebSession.token_hash != keep)
    result = session.execute(stmt)
    return int(result.rowcount)  # type: ignore[attr-defined]


def _sites(session: Session, username: str) -> tuple[str, ...]:
    return tuple(
        session.scalars(
            select(UserSite.gateway_id)
            .where(UserSite.username == username)
            .order_by(UserSite.gateway_id)
        )
    )


def _actor(
    session: Session, user: User, via: Literal["api", "page"], client: str, **kw: str | None
) -> Actor:
    return Actor(
        "user",
        username=user.username,
        role=user.role,
        display_name=user.display_name,
        via=via,
        client=client,
        sites=_sites(session, user.username),
        **kw,
    )


def session_actor(
    session: Session,
    token: str,
    kind: Literal["web", "api"],
    client: str,
    policy: Policy,
) -> Actor | None:
    """The person behind a session token, or None (unknown, expired, idle, disabled)."""
    now = utcnow()
    token_hash = hash_token(token)
    row = session.get(WebSession, token_hash)
    if row is None or row.kind != kind:
        return None
    idle = now - row.seen_at > timedelta(seconds=policy.session_idle_s)
    if row.expires_at <= now or (kind == "web" and idle):
        session.delete(row)
        return None
    user = session.get(User, row.username)
    if user is None or user.disabled:
        session.delete(row)
        return None
    if now - row.seen_at >= SEEN_EVERY:
        row.seen_at = now
    via: Literal["api", "page"] = "page" if kind == "web" else "api"
    return _actor(session, user, via, client, session_hash=token_hash, csrf=row.csrf)


# --- API tokens ---------------------------------------------------------------------


def create_token(
    session: Session, username: str, name: str, created_by: str | None
) -> tuple[str, ApiToken]:
    """A new API token for ``username``; returns it (shown once) and its row."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    token = f"{TOKEN_PREFIX}{token_id}_{secret}"
    row = ApiToken(
        id=token_id,
        token_hash=hash_token(token),
        username=username,
        name=name,
        created_by=created_by,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return token, row


def revoke_token(session: Session, token_id: str) -> ApiToken | None:
    row = session.get(ApiToken, token_id)
    if row is None:
        return None
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    session.flush()
    return row


def tokens_of(session: Session, username: str | None = None) -> list[ApiToken]:
    stmt = select(ApiToken).order_by(ApiToken.created_at.desc())
    if username is not None:
        stmt = stmt.where(ApiToken.username == username)
    return list(session.scalars(stmt))


def token_actor(session: Session, token: str, client: str) -> Actor | None:
    row = session.scalars(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).first()
    if row is None or row.revoked_at is not None:
        return None
    user = session.get(User, row.username)
    if user is None or user.disabled:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at >= SEEN_EVERY:
        session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
    return _actor(session, user, "api", client, token_id=row.id)


def bearer_actor(
    session: Session, token: str, admin_token: str, client: str, policy: Policy
) -> Actor | None:
    """Who a bearer token belongs to: the admin token, a person's API token or API session."""
    if hmac.compare_digest(token.encode(), admin_token.encode()):
        return Actor("admin_token", via="api", client=client)
    if token.startswith(TOKEN_PREFIX):
        return token_actor(session, token, client)
    return session_actor(session, token, "api", client, policy)
