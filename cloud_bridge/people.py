"""People at central: accounts, roles, the sites they work at, who may work offline.

Central is the one source (DESIGN "People, roles and sites"). Only admins
change these (``users.write``); every change is in the audit log, written in
the same transaction. A gateway holds only the offline credentials of the
people assigned to it who may work offline and are not disabled
(:func:`pushed_to`): a stolen gateway exposes one site, never the fleet.

Blocking: every function takes an open session (DB threads).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, select
from sqlalchemy.orm import Session

from cloud_bridge import audit, identity
from cloud_bridge.errors import CentralError, bad_request
from cloud_bridge.models import User, UserSite, utcnow
from cloud_bridge.permissions import ROLES, Actor
from outpost.wire.topics import valid_gateway_id

USERNAME_RE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
MAX_SITES = 1000


@dataclass(frozen=True)
class UserChange:
    """What ``PUT /api/v1/users/{username}`` (or the users page) asks to change; None: keep."""

    password: str | None = None
    offline: bool | None = None
    display_name: str | None = None
    role: str | None = None
    sites: list[str] | None = None
    site_lead: list[str] | None = None
    disabled: bool | None = None


@dataclass(frozen=True)
class Changed:
    """What a change did, for the caller's pushes and answer."""

    user: User
    created: bool
    fields: tuple[str, ...]
    # Gateways whose user snapshot changed (pushed at once), before and after.
    gateways: frozenset[str]


def valid_username(username: str) -> bool:
    return USERNAME_RE.fullmatch(username) is not None


def sites_of(session: Session, username: str) -> dict[str, bool]:
    """The gateways ``username`` works at -> whether they lead that site."""
    rows = session.scalars(
        select(UserSite).where(UserSite.username == username).order_by(UserSite.gateway_id)
    )
    return {r.gateway_id: r.site_lead for r in rows}


def _check_sites(sites: list[str], what: str) -> list[str]:
    if len(sites) > MAX_SITES:
        raise bad_request(f"{what} lists more than {MAX_SITES} gateways.", "invalid_sites")
    for gid in sites:
        if not valid_gateway_id(gid):
            raise bad_request(f"{what}: {gid!r} is not a valid gateway id.", "invalid_sites")
    return sorted(set(sites))


def pushable(user: User) -> bool:
    """Whether a gateway may hold this user's credentials at all."""
    return user.offline and not user.disabled


def put_user(
    session: Session, actor: Actor, username: str, change: UserChange, password_hash: str | None
) -> Changed:
    """Create or update a user. ``password_hash``: ``change.password`` already hashed
    (argon2 runs outside the transaction, bounded; see :mod:`cloud_bridge.passwords`)."""
    if not valid_username(username):
        raise bad_request(
            "A username is 1-64 letters, digits or the characters _ . @ -.", "invalid_username"
        )
    if change.role is not None and change.role not in ROLES:
        raise bad_request(f"role must be one of {', '.join(ROLES)}.", "invalid_role")
    user = session.get(User, username)
    now = utcnow()
    created = user is None
    before_sites = {} if user is None else sites_of(session, username)
    before_push = user is not None and pushable(user)
    if user is None:
        user, changed = _create(session, username, change, password_hash, now)
    else:
        changed = _update(user, change, password_hash, now)
    sites = _wanted_sites(change, before_sites)
    if sites != before_sites:
        changed.extend(_replace_sites(session, username, before_sites, sites))
    user.updated_at = now
    session.flush()
    ended = 0
    if "password" in changed or (user.disabled and "disabled" in changed):
        keep = actor.session_hash if actor.username == username else None
        ended = identity.end_sessions_of(session, username, keep=keep)
    gateways = _affected(before_sites, before_push, sites, pushable(user), changed)
    audit.record(
        session,
        actor,
        "user.create" if created else "user.update",
        "user",
        username,
        _summary(username, created, changed, user, sites),
        **_audit_details(user, changed, sites, ended),
    )
    return Changed(user, created, tuple(changed), frozenset(gateways))


_FIELDS = ("offline", "display_name", "role", "disabled")


def _create(
    session: Session, username: str, change: UserChange, password_hash: str | None, now: datetime
) -> tuple[User, list[str]]:
    """A new user (it needs a password) and the fields the change set."""
    if password_hash is None:
        raise bad_request("A new user needs a password.", "password_required")
    user = User(
        username=username,
        password_hash=password_hash,
        offline=bool(change.offline),
        display_name=change.display_name,
        role=change.role or "crew",
        disabled=bool(change.disabled),
        created_at=now,
        updated_at=now,
        password_changed_at=now,
    )
    session.add(user)
    session.flush()
    return user, [f for f in _FIELDS if getattr(change, f) is not None]


def _update(user: User, change: UserChange, password_hash: str | None, now: datetime) -> list[str]:
    """Apply the change to an existing user; the fields it really changed."""
    changed: list[str] = []
    if password_hash is not None:
        user.password_hash = password_hash
        user.password_changed_at = now
        changed.append("password")
    for name in _FIELDS:
        value = getattr(change, name)
        if value is not None and getattr(user, name) != value:
            setattr(user, name, value)
            changed.append(name)
    return changed


def _wanted_sites(change: UserChange, before: dict[str, bool]) -> dict[str, bool]:
    """gateway id -> site lead, after the change (``sites`` and ``site_lead``, if given)."""
    sites = dict(before)
    if change.sites is not None:
        wanted = _check_sites(change.sites, "sites")
        sites = {gid: sites.get(gid, False) for gid in wanted}
    if change.site_lead is not None:
        lead = _check_sites(change.site_lead, "site_lead")
        outside = [gid for gid in lead if gid not in sites]
        if outside:
            raise bad_request(
                f"site_lead names gateways {', '.join(outside)} that are not among the user's "
                "sites; add them to sites too.",
                "site_lead_not_in_sites",
            )
        sites = {gid: gid in lead for gid in sites}
    return sites


def _replace_sites(
    session: Session, username: str, before: dict[str, bool], sites: dict[str, bool]
) -> list[str]:
    """Write the user's sites; which of ``sites`` and ``site_lead`` changed."""
    session.execute(delete(UserSite).where(UserSite.username == username))
    session.add_all(
        UserSite(username=username, gateway_id=gid, site_lead=lead) for gid, lead in sites.items()
    )
    changed = []
    if set(sites) != set(before):
        changed.append("sites")
    if {g for g, lead in sites.items() if lead} != {g for g, lead in before.items() if lead}:
        changed.append("site_lead")
    return changed


def _audit_details(
    user: User, changed: list[str], sites: dict[str, bool], ended: int
) -> dict[str, Any]:
    details: dict[str, Any] = {"fields": changed}
    for name in ("role", "offline", "disabled"):
        if name in changed:
            details[name] = getattr(user, name)
    if "sites" in changed or "site_lead" in changed:
        details["sites"] = sorted(sites)
        details["site_lead"] = sorted(g for g, lead in sites.items() if lead)
    if ended:
        details["sessions_ended"] = ended
    return details


def _affected(
    before: dict[str, bool],
    before_push: bool,
    after: dict[str, bool],
    after_push: bool,
    changed: list[str],
) -> set[str]:
    """The gateways whose snapshot of this user changed (added, removed or altered)."""
    was = set(before) if before_push else set()
    now = set(after) if after_push else set()
    out = was ^ now
    if changed:
        out |= was & now  # a password, name, role or site-lead change alters the entry
    return out


def _summary(
    username: str, created: bool, changed: list[str], user: User, sites: dict[str, bool]
) -> str:
    if created:
        bits = [f"role {user.role}"]
        if user.offline:
            bits.append("may work offline")
        if sites:
            bits.append("sites " + ", ".join(sites))
        return f"created user {username!r} ({'; '.join(bits)})"
    words = []
    for name in changed:
        if name == "password":
            words.append("changed the password")
        elif name == "role":
            words.append(f"role → {user.role}")
        elif name == "offline":
            words.append("may work offline" if user.offline else "may no longer work offline")
        elif name == "disabled":
            words.append("disabled" if user.disabled else "enabled again")
        elif name == "sites":
            words.append("sites → " + (", ".join(sites) or "none"))
        elif name == "site_lead":
            lead = [g for g, v in sites.items() if v]
            words.append("site lead at → " + (", ".join(lead) or "none"))
        elif name == "display_name":
            words.append(f"name → {user.display_name!r}")
    return f"updated user {username!r}: " + ("; ".join(words) or "no change")


def _pushed(gateway_id: str) -> Select[User, bool]:
    """Who gateway ``gateway_id`` holds: the one rule (:func:`pushed_to`, :func:`is_pushed_to`).

    Only people assigned to that gateway who may work offline and are not
    disabled (issue 13: a stolen SD card exposes one site's crew).
    """
    return (
        select(User, UserSite.site_lead)
        .join(UserSite, UserSite.username == User.username)
        .where(
            UserSite.gateway_id == gateway_id,
            User.offline.is_(True),
            User.disabled.is_(False),
        )
    )


def pushed_to(session: Session, gateway_id: str) -> list[tuple[User, bool]]:
    """The users gateway ``gateway_id`` holds, with their site-lead flag there."""
    rows = session.execute(_pushed(gateway_id).order_by(User.username))
    return [(u, bool(lead)) for u, lead in rows]


def is_pushed_to(session: Session, username: str, gateway_id: str) -> bool:
    """Whether central pushes ``username`` to ``gateway_id`` (the rule of :func:`pushed_to`).

    What central trusts of a gateway's word about a user rests on this: a
    check-out "for" a user central does not push there is refused.
    """
    found = session.execute(_pushed(gateway_id).where(User.username == username).limit(1))
    return found.first() is not None


def works_at(session: Session, username: str, gateway_id: str) -> bool:
    return session.get(UserSite, (username, gateway_id)) is not None


def get_user(session: Session, username: str) -> User:
    user = session.get(User, username)
    if user is None:
        raise CentralError("not_found", f"No user {username!r} exists.", 404)
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def all_sites(session: Session) -> dict[str, dict[str, bool]]:
    """username -> {gateway_id: site_lead} for every user, in one query."""
    out: dict[str, dict[str, bool]] = {}
    for row in session.scalars(select(UserSite).order_by(UserSite.gateway_id)):
        out.setdefault(row.username, {})[row.gateway_id] = row.site_lead
    return out
