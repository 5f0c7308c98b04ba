"""Who may do what on the central platform: roles, actions, and the one check.

Every route (API and pages alike) declares one :class:`Action` in its route
table (``cloud_bridge.views.ROUTES``, ``cloud_bridge.web.pages.PAGES``);
``cloud_bridge.access.access_middleware`` asks :func:`may` before any handler
runs, and refuses a route that declared nothing. The grants below are the
whole policy: read this table to know what a role can do.

Some grants are *own*: a crew member may read activities, but only those they
are responsible for or hold. The middleware lets such a route through; the
view narrows what it shows with :func:`scope` and :func:`owns`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

ROLES = ("admin", "dispatcher", "crew", "viewer")
ROLE_HELP = {
    "admin": "everything: users, roles and sites, forms, the audit log, the fleet",
    "dispatcher": "activities: create, dispatch, recall, review; the fleet",
    "crew": "their own activities: approve them, see their records",
    "viewer": "read only: activities, records and the fleet",
}


class Action(StrEnum):
    PUBLIC = "public"  # anyone, signed in or not (liveness, sign-in, the stylesheet)
    SIGNED_IN = "signed_in"  # any signed-in person (their own account, tokens, sign-out)
    ACTIVITIES_READ = "activities.read"
    ACTIVITIES_WRITE = "activities.write"  # create, edit
    ACTIVITIES_APPROVE = "activities.approve"  # rule 1: only the responsible user, checked in rules
    ACTIVITIES_DISPATCH = "activities.dispatch"  # dispatch, recall (cancel)
    ACTIVITIES_REVIEW = "activities.review"
    TYPES_READ = "types.read"
    TYPES_WRITE = "types.write"
    USERS_READ = "users.read"
    USERS_WRITE = "users.write"
    TOKENS_MANAGE = "tokens.manage"  # anyone's API tokens (everyone manages their own)
    FLEET_READ = "fleet.read"
    AUDIT_READ = "audit.read"
    EXPORTS_READ = "exports.read"
    METRICS_READ = "metrics.read"


A = Action
Scope = Literal["all", "own"]

# role -> action -> scope. Absent: refused.
GRANTS: dict[str, dict[Action, Scope]] = {
    "admin": {a: "all" for a in Action},
    "dispatcher": {
        A.SIGNED_IN: "all",
        A.ACTIVITIES_READ: "all",
        A.ACTIVITIES_WRITE: "all",
        A.ACTIVITIES_APPROVE: "own",
        A.ACTIVITIES_DISPATCH: "all",
        A.ACTIVITIES_REVIEW: "all",
        A.TYPES_READ: "all",
        A.USERS_READ: "all",
        A.FLEET_READ: "all",
        A.EXPORTS_READ: "all",
    },
    "crew": {
        A.SIGNED_IN: "all",
        A.ACTIVITIES_READ: "own",
        A.ACTIVITIES_APPROVE: "own",
        A.TYPES_READ: "all",
    },
    "viewer": {
        A.SIGNED_IN: "all",
        A.ACTIVITIES_READ: "all",
        A.TYPES_READ: "all",
        A.FLEET_READ: "all",
    },
}

# What a refusal says the person tried to do ("Your role (crew) may not …").
ACTION_WORDS: dict[Action, str] = {
    A.PUBLIC: "open this page",
    A.SIGNED_IN: "use this page",
    A.ACTIVITIES_READ: "see activities",
    A.ACTIVITIES_WRITE: "create or edit activities",
    A.ACTIVITIES_APPROVE: "approve activities",
    A.ACTIVITIES_DISPATCH: "dispatch or recall activities",
    A.ACTIVITIES_REVIEW: "review activities",
    A.TYPES_READ: "see activity types",
    A.TYPES_WRITE: "define activity types",
    A.USERS_READ: "see users",
    A.USERS_WRITE: "create or change users",
    A.TOKENS_MANAGE: "manage other people's API tokens",
    A.FLEET_READ: "see the fleet",
    A.AUDIT_READ: "read the audit log",
    A.EXPORTS_READ: "export data",
    A.METRICS_READ: "read the metrics",
}

ActorKind = Literal["anonymous", "user", "admin_token"]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is asking: a signed-in person, the admin token (a script), or nobody.

    ``via`` is ``api`` or ``page``; ``client`` the address the request came
    from; ``session_hash`` and ``csrf`` belong to a page's cookie session;
    ``token_id`` to a person's API token.
    """

    kind: ActorKind
    username: str | None = None
    role: str | None = None
    display_name: str | None = None
    via: Literal["api", "page"] = "api"
    client: str = ""
    session_hash: str | None = None
    csrf: str | None = None
    token_id: str | None = None
    sites: tuple[str, ...] = field(default=())

    @property
    def signed_in(self) -> bool:
        return self.kind != "anonymous"

    @property
    def is_admin_token(self) -> bool:
        return self.kind == "admin_token"

    @property
    def name(self) -> str:
        """How the audit log and pages name this actor."""
        if self.kind == "admin_token":
            return "the admin token"
        return self.username or "nobody"

    @property
    def effective_role(self) -> str | None:
        return "admin" if self.kind == "admin_token" else self.role


ANONYMOUS = Actor("anonymous")


def scope(actor: Actor, action: Action) -> Scope | None:
    """How far ``actor`` may do ``action``: everywhere, on their own things, or not at all."""
    if action is Action.PUBLIC:
        return "all"
    role = actor.effective_role
    if role is None:
        return None
    return GRANTS.get(role, {}).get(action)


def may(actor: Actor, action: Action) -> bool:
    return scope(actor, action) is not None


def owns(actor: Actor, *usernames: str | None) -> bool:
    """Whether ``actor`` is one of ``usernames`` (the responsible user, the holder)."""
    return actor.username is not None and actor.username in usernames


def refusal(actor: Actor, action: Action) -> str:
    """One sentence saying why ``actor`` may not do ``action``."""
    what = ACTION_WORDS.get(action, str(action))
    if not actor.signed_in:
        return f"Sign in to {what}."
    return f"Your role ({actor.effective_role}) may not {what}; ask an admin if you need to."
