"""Replay: one transaction per envelope, exactly once, in seq order, with clear rejections."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import func, select

from cloud_bridge import rules
from cloud_bridge.db import Database
from cloud_bridge.models import LedgerEntry, RecordRow
from cloud_bridge.replay import Replayer
from tests.cloud_bridge.conftest import Seeded, envelope


def outcomes(results: list) -> list[tuple[int, str, str | None]]:  # type: ignore[type-arg]
    return [(0, r.outcome, r.code) for _, r in results]


def record(db: Database, aid: str) -> dict:  # type: ignore[type-arg]
    with db.session() as s:
        return rules.record_of(s, aid)


def test_apply_draft_then_completed_checks_in(
    db: Database, seed: Seeded, replayer: Replayer
) -> None:
    aid = seed.ready()
    r1 = replayer.apply_envelopes("site-a", [envelope(aid, 1)])
    assert [(gw, r.outcome, r.checked_in) for gw, r in r1] == [("site-a", "applied", False)]
    rec = record(db, aid)
    assert rec["record"]["notes"] == "seq 1" and len(rec["tables"]["readings"]) == 3
    assert rec["state"] == "offline"
    r2 = replayer.apply_envelopes(
        "site-a", [envelope(aid, 2, status="completed", tables={"readings": [{"meter": "Z"}]})]
    )
    ((_gw, res),) = r2
    assert res.outcome == "applied" and res.checked_in and res.activity_version == 2
    rec = record(db, aid)
    assert rec["state"] == "online" and rec["version"] == 2
    assert rec["tables"] == {"readings": [{"meter": "Z"}]}  # last envelope's state, not a merge
    with db.session() as s:
        a = rules.get_activity(s, aid)
        assert a.holder_gateway is None and a.holder_user is None
        assert aid in [x.id for x in rules.list_activities(s, "online")]


def test_duplicate_delivery_has_one_effect(db: Database, seed: Seeded, replayer: Replayer) -> None:
    aid = seed.ready()
    e1 = envelope(aid, 1)
    first = replayer.apply_envelopes("site-a", [e1])
    # The same batch again, and the envelope again inside a bigger batch.
    again = replayer.apply_envelopes("site-a", [e1])
    both = replayer.apply_envelopes("site-a", [envelope(aid, 2), e1])
    assert again == first
    assert [r for _, r in both if r.envelope_id == e1.envelope_id] == [first[0][1]]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(LedgerEntry)) == 2
        assert s.scalar(select(func.count()).select_from(RecordRow)) == 3
        assert rules.get_activity(s, aid).last_seq == 2


def test_duplicate_of_rejection_returns_first_rejection(
    db: Database, seed: Seeded, replayer: Replayer
) -> None:
    aid = seed.ready()
    bad = envelope(aid, 1, record={"site_ok": "yes"})
    ((_, r1),) = replayer.apply_envelopes("site-a", [bad])
    ((_, r2),) = replayer.apply_envelopes("site-a", [bad])
    assert r1.outcome == "rejected" and r1.code == "validation"
    assert r2 == r1


def test_reordering_and_gap_hold(db: Database, seed: Seeded, replayer: Replayer) -> None:
    aid = seed.ready()
    e1, e2, e3 = (envelope(aid, n) for n in (1, 2, 3))
    assert replayer.apply_envelopes("site-a", [e3]) == []  # gap: held, no result yet
    assert replayer.apply_envelopes("site-a", [e2]) == []
    assert replayer.apply_envelopes("site-a", [e3]) == []  # duplicate of a held one: still held
    with db.session() as s:
        assert rules.envelope_of(s, str(e3.envelope_id)).outcome == "held"
        assert rules.record_of(s, aid)["record"] is None
    results = replayer.apply_envelopes("site-a", [e1])
    assert [(r.envelope_id, r.outcome) for _, r in results] == [
        (e1.envelope_id, "applied"),
        (e2.envelope_id, "applied"),
        (e3.envelope_id, "applied"),
    ]
    assert record(db, aid)["record"]["notes"] == "seq 3"
    with db.session() as s:
        assert rules.envelope_of(s, str(e3.envelope_id)).payload is None


def test_batch_out_of_order_applies_in_seq_order(
    db: Database, seed: Seeded, replayer: Replayer
) -> None:
    aid = seed.ready()
    envs = [envelope(aid, n) for n in (4, 2, 1, 3)]
    results = replayer.apply_envelopes("site-a", envs)
    assert [r.outcome for _, r in results] == ["applied"] * 4
    assert record(db, aid)["seq"] == 4


def test_stale_base_version_is_conflict(db: Database, seed: Seeded, replayer: Replayer) -> None:
    aid = seed.ready()
    replayer.apply_envelopes("site-a", [envelope(aid, 1)])
    ((_, res),) = replayer.apply_envelopes(
        "site-a", [envelope(aid, 2, base_version=0, record={"site_ok": False})]
    )
    assert (res.outcome, res.code) == ("rejected", "conflict")
    assert "version 0" in (res.reason or "")
    assert record(db, aid)["record"]["notes"] == "seq 1"  # never overwritten
    # The rejection consumed seq 2: a corrected envelope follows with seq 3.
    ((_, fixed),) = replayer.apply_envelopes("site-a", [envelope(aid, 3)])
    assert fixed.outcome == "applied"


def test_validation_rejection_is_kept_in_ledger(
    db: Database, seed: Seeded, replayer: Replayer
) -> None:
    aid = seed.ready()
    bad = envelope(
        aid,
        1,
        status="completed",  # required answers are checked on the completed envelope
        record={"notes": 5, "weather": "snow", "extra": 1},
        tables={"readings": [{"value": "x"}], "ghosts": []},
    )
    ((_, res),) = replayer.apply_envelopes("site-a", [bad])
    assert (res.outcome, res.code) == ("rejected", "validation")
    reason = res.reason or ""
    for needle in (
        "'site_ok' is required",
        "'notes' must be text",
        "'weather' must be one of",
        "'extra' is not a field",
        "'meter' is required",
        "'ghosts' is not part",
    ):
        assert needle in reason
    with db.session() as s:
        entry = rules.envelope_of(s, str(bad.envelope_id))
        assert (entry.outcome, entry.code, entry.reason) == ("rejected", "validation", reason)
        assert entry.created_at is not None and entry.received_at is not None
        assert entry.applied_at is not None
        assert rules.record_of(s, aid)["record"] is None


def test_permission_and_unknown_activity(db: Database, seed: Seeded, replayer: Replayer) -> None:
    aid = seed.ready("site-a")
    other = seed.ready(gateway=None)
    seed.user("mallory")
    results = (
        replayer.apply_envelopes(
            "site-b",
            [envelope(aid, 1)],  # not the holder gateway
        )
        + replayer.apply_envelopes(
            "site-a",
            [envelope(other, 1)],  # not checked out at all
        )
        + replayer.apply_envelopes("site-a", [envelope("ghost", 1)])
        + replayer.apply_envelopes("site-a", [envelope(aid, 1, author="mallory")])
    )
    assert [r.code for _, r in results] == [
        "permission",
        "permission",
        "unknown_activity",
        "permission",
    ]
    assert all(r.outcome == "rejected" and r.reason for _, r in results)


def test_stale_seq_and_after_check_in(db: Database, seed: Seeded, replayer: Replayer) -> None:
    aid = seed.ready()
    replayer.apply_envelopes("site-a", [envelope(aid, 1)])
    ((_, res),) = replayer.apply_envelopes("site-a", [envelope(aid, 1)])  # new id, used seq
    assert res.code == "stale_seq"
    # seq 3 waits for 2; then 2 (completed) checks the activity in; 3 can never apply.
    assert replayer.apply_envelopes("site-a", [envelope(aid, 3)]) == []
    results = replayer.apply_envelopes("site-a", [envelope(aid, 2, status="completed")])
    assert [(r.outcome, r.code, r.checked_in) for _, r in results] == [
        ("applied", None, True),
        ("rejected", "checked_in", False),
    ]


def test_cancel_rejects_held_and_later_envelopes(
    db: Database, seed: Seeded, replayer: Replayer
) -> None:
    aid = seed.ready()
    e2 = envelope(aid, 2)
    assert replayer.apply_envelopes("site-a", [e2]) == []
    with db.session() as s:
        _, holder, held = rules.cancel(s, aid, "stop")
    assert holder == "site-a"
    assert [(gw, r.envelope_id, r.code) for gw, r in held] == [
        ("site-a", e2.envelope_id, "canceled")
    ]
    ((_, res),) = replayer.apply_envelopes("site-a", [envelope(aid, 1)])
    assert res.code == "canceled"


def test_one_bad_envelope_does_not_block_others(
    db: Database, seed: Seeded, replayer: Replayer
) -> None:
    a1 = seed.ready(activity_id="a-1")
    a2 = seed.ready(activity_id="a-2")
    results = replayer.apply_envelopes(
        "site-a", [envelope(a1, 1, record={"bad": 1}), envelope(a2, 1), envelope(a1, 2)]
    )
    assert sorted((r.activity_id, r.outcome) for _, r in results) == [
        ("a-1", "applied"),
        ("a-1", "rejected"),
        ("a-2", "applied"),
    ]


def test_concurrent_duplicate_delivery(db: Database, seed: Seeded, replayer: Replayer) -> None:
    """Three workers (shared subscription, redelivery) apply the same batches at once."""
    aid = seed.ready()
    envs = [envelope(aid, n) for n in range(1, 11)] + [envelope("ghost", 1)]
    batches = [envs[i : i + 3] for i in range(0, len(envs), 3)]
    barrier = threading.Barrier(3)
    seen: list[list] = []  # type: ignore[type-arg]
    errors: list[BaseException] = []

    def worker(order: list) -> None:  # type: ignore[type-arg]
        barrier.wait()
        try:
            out = []
            for b in order:
                out += replayer.apply_envelopes("site-a", b)
            seen.append(out)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=(list(batches),)),
        threading.Thread(target=worker, args=(list(reversed(batches)),)),
        threading.Thread(target=worker, args=(batches[1:] + batches[:1],)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    with db.session() as s:
        outcomes_ = dict(s.execute(select(LedgerEntry.envelope_id, LedgerEntry.outcome)).all())
        assert len(outcomes_) == 11
        assert sorted(outcomes_.values()) == ["applied"] * 10 + ["rejected"]
        assert rules.get_activity(s, aid).last_seq == 10
        assert s.scalar(select(func.count()).select_from(RecordRow)) == 3
    # Every result a worker sent for an envelope is the same first outcome.
    by_id: dict[uuid.UUID, set] = {}  # type: ignore[type-arg]
    for out in seen:
        for _, r in out:
            by_id.setdefault(r.envelope_id, set()).add((r.outcome, r.code, r.applied_at))
    assert all(len(v) == 1 for v in by_id.values())
    assert record(db, aid)["seq"] == 10


def test_second_check_out_continues_the_gateways_seq(
    db: Database, seed: Seeded, replayer: Replayer
) -> None:
    """A gateway numbers after the highest seq it holds; another gateway starts at 1."""
    aid = seed.ready("site-a")
    replayer.apply_envelopes("site-a", [envelope(aid, 1), envelope(aid, 2, status="completed")])
    with db.session() as s:
        rules.approve(s, aid, "ana")
        rules.check_out(s, aid, "site-a")
    ((_, res),) = replayer.apply_envelopes(
        "site-a", [envelope(aid, 3, base_version=2, status="completed")]
    )
    assert (res.outcome, res.checked_in) == ("applied", True)
    with db.session() as s:
        rules.check_out(s, aid, "site-b")
    ((_, res),) = replayer.apply_envelopes("site-b", [envelope(aid, 1, base_version=3)])
    assert res.outcome == "applied"


def _install_failing_trigger(db: Database) -> None:
    """A real database failure in the middle of a batch: inserting a row whose meter is 'boom'."""
    with db.engine.begin() as conn:
        if db.sqlite:
            conn.exec_driver_sql(
                "CREATE TRIGGER boom BEFORE INSERT ON record_rows "
                "WHEN json_extract(NEW.data, '$.meter') = 'boom' "
                "BEGIN SELECT RAISE(ABORT, 'boom'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION boom() RETURNS trigger AS $$ BEGIN "
                "IF NEW.data->>'meter' = 'boom' THEN RAISE EXCEPTION 'boom'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER boom BEFORE INSERT ON record_rows "
                "FOR EACH ROW EXECUTE FUNCTION boom()"
            )


def _drop_failing_trigger(db: Database) -> None:
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "DROP TRIGGER boom" if db.sqlite else "DROP TRIGGER boom ON record_rows"
        )


def test_failure_mid_batch_leaves_no_partial_envelope(
    db: Database, seed: Seeded, replayer: Replayer
) -> None:
    good = seed.ready(activity_id="a-good")
    bad = seed.ready(activity_id="a-bad")
    e_good = envelope(good, 1)
    e_bad = envelope(bad, 1, tables={"readings": [{"meter": "ok"}, {"meter": "boom"}]})
    _install_failing_trigger(db)
    with pytest.raises(Exception, match="boom"):
        replayer.apply_envelopes("site-a", [e_good, e_bad])
    with db.session() as s:
        # The failed envelope left nothing: no ledger row, no record, no rows, seq not consumed.
        assert s.get(LedgerEntry, str(e_bad.envelope_id)) is None
        assert rules.record_of(s, bad)["record"] is None
        assert rules.get_activity(s, bad).last_seq == 0
        # Its batch-mate: all or nothing too (nothing, when the batch is one transaction).
        entry = s.get(LedgerEntry, str(e_good.envelope_id))
        rec = rules.record_of(s, good)
        assert (entry is None) == (rec["record"] is None)
    _drop_failing_trigger(db)
    # The gateway sends the batch again: each envelope applies exactly once.
    results = replayer.apply_envelopes("site-a", [e_good, e_bad])
    assert sorted(r.outcome for _, r in results) == ["applied", "applied"]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(LedgerEntry)) == 2
        assert rules.record_of(s, bad)["tables"]["readings"][1] == {"meter": "boom"}


def test_a_draft_without_its_required_answers_applies(
    db: Database, seed: Seeded, replayer: Replayer
) -> None:
    aid = seed.ready()
    ((_, draft),) = replayer.apply_envelopes("site-a", [envelope(aid, 1, record={})])
    assert draft.outcome == "applied"
    ((_, done),) = replayer.apply_envelopes(
        "site-a", [envelope(aid, 2, status="completed", record={})]
    )
    assert (done.outcome, done.code) == ("rejected", "validation")
    assert "'site_ok' is required" in (done.reason or "")
