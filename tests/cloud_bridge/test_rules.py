"""Rules 1-6: every refusal with its code, and the atomic check-out race."""

from __future__ import annotations

import threading

import pytest

from cloud_bridge import rules
from cloud_bridge.db import Database
from cloud_bridge.errors import CentralError
from cloud_bridge.models import OFFLINE, ONLINE
from tests.cloud_bridge.conftest import Seeded


def dispatch(db: Database, activity_id: str, gateway: str = "site-a") -> None:
    with db.session() as s:
        rules.check_out(s, activity_id, gateway)


def refusal(db: Database, activity_id: str, gateway: str = "site-a") -> CentralError:
    with pytest.raises(CentralError) as info:
        dispatch(db, activity_id, gateway)
    assert info.value.message.endswith(".")
    return info.value


def test_not_approved_is_refused(db: Database, seed: Seeded) -> None:
    seed.user()
    seed.activity_type()
    aid = seed.activity(approver=None)
    assert refusal(db, aid).code == "not_approved"


def test_approver_must_be_responsible(db: Database, seed: Seeded) -> None:
    seed.user("ana")
    seed.user("boss")
    seed.activity_type()
    aid = seed.activity(responsible="ana", approver="boss")
    err = refusal(db, aid)
    assert err.code == "approver_not_responsible"
    assert "boss" in err.message and "ana" in err.message


def test_user_must_be_allowed_offline(db: Database, seed: Seeded) -> None:
    seed.user("ana", offline=False)
    seed.activity_type()
    aid = seed.activity()
    assert refusal(db, aid).code == "user_not_offline"
    # Rule 6: once central allows it, the same dispatch goes through.
    with db.session() as s:
        rules.put_user(s, "ana", None, True)
    dispatch(db, aid)


def test_type_must_be_offline_enabled(db: Database, seed: Seeded) -> None:
    seed.user()
    seed.activity_type(offline=False)
    aid = seed.activity()
    assert refusal(db, aid).code == "type_not_offline"


def test_already_checked_out(db: Database, seed: Seeded) -> None:
    aid = seed.ready("site-a")
    err = refusal(db, aid, "site-b")
    assert err.code == "already_checked_out"
    assert "site-a" in err.message


def test_unknown_and_canceled(db: Database, seed: Seeded) -> None:
    assert refusal(db, "nope").code == "not_found"
    aid = seed.ready(gateway=None)
    with db.session() as s:
        _, holder, _ = rules.cancel(s, aid, "no longer needed")
    assert holder is None
    assert refusal(db, aid).code == "canceled"


def test_offline_activity_leaves_online_list_and_refuses_edits(db: Database, seed: Seeded) -> None:
    aid = seed.ready("site-a")
    with db.session() as s:
        assert aid not in [a.id for a in rules.list_activities(s, ONLINE)]
        assert aid in [a.id for a in rules.list_activities(s, OFFLINE)]
        a = rules.get_activity(s, aid)
        assert (a.holder_gateway, a.holder_user) == ("site-a", "ana")
        assert a.checked_out_at is not None
    for edit in (
        lambda s: rules.update_activity(s, aid, "new title", None),
        lambda s: rules.approve(s, aid, "ana"),
    ):
        with pytest.raises(CentralError) as info, db.session() as s:
            edit(s)
        assert info.value.code == "checked_out"
        assert info.value.status == 409


def test_cancel_of_checked_out_names_the_holder(db: Database, seed: Seeded) -> None:
    aid = seed.ready("site-a")
    with db.session() as s:
        activity, holder, _ = rules.cancel(s, aid, "recalled")
        assert activity.state == "canceled"
    assert holder == "site-a"


def test_checkout_request_by_someone_else_is_refused(db: Database, seed: Seeded) -> None:
    aid = seed.ready(gateway=None)
    seed.user("bob")
    with pytest.raises(CentralError) as info, db.session() as s:
        rules.check_out(s, aid, "site-a", "bob")
    assert info.value.code == "not_responsible"


def test_user_push_snapshot(db: Database, seed: Seeded) -> None:
    seed.user("ana", offline=True)
    seed.user("bob", offline=False)
    seed.activity_type("inspection", offline=True)
    seed.activity_type("audit", offline=False)
    with db.session() as s:
        rules.put_user(s, "cy", "pw-cy", True, sites=["site-b"])  # works elsewhere
        rules.put_user(s, "dee", "pw-dee", True, sites=["site-a"], disabled=True)
        rules.put_user(s, "eli", "pw-eli", True, sites=["site-a"], site_lead=["site-a"])
        push = rules.user_push(s, "site-a")
    # Only those who may work offline, are not disabled and work at site-a (issue 13).
    assert [u.username for u in push.users] == ["ana", "eli"]
    assert push.offline_types == ["inspection"]
    if "site_lead" in type(push.users[0]).model_fields:
        assert [u.site_lead for u in push.users] == [False, True]
    assert rules.verify_password(push.users[0].password_hash, "pw-ana")
    assert not rules.verify_password(push.users[0].password_hash, "wrong")


@pytest.mark.parametrize("rounds", [5])
def test_concurrent_dispatch_exactly_one_wins(db: Database, seed: Seeded, rounds: int) -> None:
    seed.user()
    seed.activity_type()
    for _ in range(rounds):
        aid = seed.activity()
        barrier = threading.Barrier(4)
        wins: list[str] = []
        losses: list[str] = []

        def go(
            gateway: str,
            aid: str = aid,
            barrier: threading.Barrier = barrier,
            wins: list[str] = wins,
            losses: list[str] = losses,
        ) -> None:
            barrier.wait()
            try:
                dispatch(db, aid, gateway)
                wins.append(gateway)
            except CentralError as exc:
                losses.append(exc.code)

        threads = [threading.Thread(target=go, args=(f"site-{c}",)) for c in "abcd"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1, (wins, losses)
        assert losses == ["already_checked_out"] * 3
        with db.session() as s:
            assert rules.get_activity(s, aid).holder_gateway == wins[0]


def test_a_gateway_checks_out_only_for_its_own_crew_responsible_for_the_activity(
    db: Database, seed: Seeded
) -> None:
    """CheckoutRequest.username is the gateway's word: central believes it only so far."""
    aid = seed.ready(gateway=None)
    with db.session() as s:
        rules.put_user(s, "cy", "pw-cy", True, sites=["site-b"])  # works elsewhere
        rules.put_user(s, "dee", "pw-dee", True, sites=["site-a"], disabled=True)
        rules.put_user(s, "bob", "pw-bob", False, sites=["site-a"])  # not offline
        rules.put_user(s, "eli", "pw-eli", True, sites=["site-a"])  # pushed, not responsible

    def refusal(username: str, gateway: str = "site-a") -> str:
        with pytest.raises(CentralError) as info, db.session() as s:
            rules.gateway_check_out(s, aid, gateway, username)
        assert info.value.message
        return info.value.code

    assert {u: refusal(u) for u in ("cy", "nobody", "dee", "bob", "eli")} == {
        "cy": "user_not_at_site",
        "nobody": "user_not_at_site",  # an unknown name gets the same answer
        "dee": "user_disabled",
        "bob": "user_not_offline",
        "eli": "not_responsible",
    }
    with db.session() as s:
        activity, wire = rules.gateway_check_out(s, aid, "site-a", "ana")
        assert (activity.holder_gateway, activity.holder_user, wire.id) == ("site-a", "ana", aid)
    # A repeat (the first answer was lost) is answered again only while ana is site-a's.
    with db.session() as s:
        rules.gateway_check_out(s, aid, "site-a", "ana")
        rules.put_user(s, "ana", None, None, sites=["site-b"])
    assert refusal("ana") == "user_not_at_site"
    with db.session() as s:
        assert rules.get_activity(s, aid).holder_gateway == "site-a"  # nothing changed


def test_a_gateway_first_seen_by_several_transactions_at_once_gets_one_row(
    db: Database, seed: Seeded
) -> None:
    """Its state message, a batch and a dispatch can all be the first to see a gateway."""
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def first_sight() -> None:
        try:
            with db.session() as s:
                barrier.wait()
                rules.touch_gateway(s, "site-new")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_sight) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    with db.session() as s:
        assert rules.known_gateways(s).count("site-new") == 1
