"""The people central pushed for this site: users, offline types, whose sessions end."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, select

from gateway.store.schema import offline_types, sessions, users
from gateway.store.tasks import WriteTask
from outpost.times import utcnow
from outpost.wire.schemas import UserPush


@dataclass(frozen=True, slots=True)
class ReplaceUsers(WriteTask[list[str]]):
    """Make users and offline types exactly ``push``; returns whose sessions ended."""

    push: UserPush

    def run(self, conn: Connection) -> list[str]:
        return replace_users(conn, self.push)


def replace_users(conn: Connection, push: UserPush) -> list[str]:
    """Make users and offline types exactly the pushed snapshot; return whose sessions ended.

    A user's sessions end here when they are gone, may no longer work
    offline, or their password changed centrally (a new hash): a stolen or
    shared password stops working on the gateway at the next push.
    """
    now = utcnow()
    before = {
        r.username: r.password_hash
        for r in conn.execute(select(users.c.username, users.c.password_hash))
    }
    pushed = {u.username: u for u in push.users}
    conn.execute(delete(users))
    if push.users:
        conn.execute(
            insert(users),
            [
                {
                    "username": u.username,
                    "password_hash": u.password_hash,
                    "offline": u.offline,
                    "display_name": u.display_name,
                    "updated_at": now,
                    "site_lead": u.site_lead,
                }
                for u in push.users
            ],
        )
    ended: list[str] = []
    for (username,) in conn.execute(select(sessions.c.username).distinct()).all():
        user = pushed.get(username)
        if user is None or not user.offline or user.password_hash != before.get(username):
            conn.execute(delete(sessions).where(sessions.c.username == username))
            ended.append(username)
    conn.execute(delete(offline_types))
    if push.offline_types:
        conn.execute(insert(offline_types), [{"name": n} for n in sorted(set(push.offline_types))])
    return sorted(ended)
