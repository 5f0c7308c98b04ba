"""Central's sign-in throttle is the shared lockout (outpost/passwords.py) on central's
database: guesses reserved before they are checked, a busy guess given back, the
address charged only for failures, a right password clearing the user's count."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from cloud_bridge import identity
from cloud_bridge.db import Database
from cloud_bridge.errors import CentralError
from cloud_bridge.models import signin_failures

POLICY = identity.Policy(max_failures=2, failure_window_s=900, lockout_s=900)


def reserve(db: Database, user: str = "ana", client: str = "10.0.0.1") -> None:
    with db.session() as s:
        identity.reserve_guess(s, user, client, POLICY)


def counts(db: Database) -> dict[str, int]:
    with db.session() as s:
        rows = s.execute(select(signin_failures.c.key, signin_failures.c.failures)).all()
    return {key: n for key, n in rows}


def test_guesses_are_reserved_refunded_and_cleared(db: Database) -> None:
    reserve(db)
    reserve(db)
    with pytest.raises(CentralError) as locked:
        reserve(db)  # the limit's guesses were all reserved: the next is refused
    assert locked.value.status == 429 and int(locked.value.headers["Retry-After"]) > 800
    assert counts(db) == {"user:ana": 2}  # the refused one reserved nothing
    with db.session() as s:
        identity.clear_guesses(s, "ana")  # a right password
    reserve(db)
    with db.session() as s:
        identity.refund_guess(s, "ana", POLICY)  # never checked: the slots were busy
    assert counts(db) == {"user:ana": 0}
    reserve(db)
    reserve(db)  # both still allowed after the refund
    # The address: charged for failures only, with CLIENT_FACTOR x the room.
    with db.session() as s:
        for _ in range(POLICY.max_failures * identity.CLIENT_FACTOR):
            identity.note_failure(s, "10.0.0.1", POLICY)
    with pytest.raises(CentralError) as by_address:
        reserve(db, user="someone-else")
    assert by_address.value.status == 429
    reserve(db, user="someone-else", client="10.0.0.2")  # another address is not locked
