"""Replay: one transaction per envelope, exactly once, in seq order, with clear rejections."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import func, select

from cloud_bridge import rules
from cloud_bridge.db import Database
from cloud_bridge.models import LedgerEntry, RecordRow
from cloud_bridge.replay import Replayer
from outpost.wire.schemas import WireEnvelope
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


def _install_refusing_trigger(db: Database) -> None:
    """The database refuses a record row whose meter is 'boom' (a constraint, as it would)."""
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
                "IF NEW.data->>'meter' = 'boom' THEN "
                "RAISE EXCEPTION 'boom' USING ERRCODE = 'check_violation'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER boom BEFORE INSERT ON record_rows "
                "FOR EACH ROW EXECUTE FUNCTION boom()"
            )


def test_a_row_the_database_refuses_costs_one_rejection(
    db: Database, seed: Seeded, replayer: Replayer
) -> None:
    good = seed.ready(activity_id="a-good")
    bad = seed.ready(activity_id="a-bad")
    e_good = envelope(good, 1)
    e_bad = envelope(bad, 1, tables={"readings": [{"meter": "ok"}, {"meter": "boom"}]})
    e_next = envelope(bad, 2)
    _install_refusing_trigger(db)
    results = replayer.apply_envelopes("site-a", [e_good, e_bad])
    by_id = {r.envelope_id: r for _, r in results}
    assert by_id[e_good.envelope_id].outcome == "applied"
    refused = by_id[e_bad.envelope_id]
    assert (refused.outcome, refused.code) == ("rejected", "unstorable")
    assert "boom" in (refused.reason or "")
    # The refused envelope consumed its seq: the next one of its activity applies.
    ((_, after),) = replayer.apply_envelopes("site-a", [e_next])
    assert after.outcome == "applied"
    with db.session() as s:
        entry = rules.envelope_of(s, str(e_bad.envelope_id))
        assert (entry.outcome, entry.code, entry.seq) == ("rejected", "unstorable", 1)
        assert rules.record_of(s, bad)["seq"] == 2  # nothing of the refused one
    # Sent again: its first answer, no second effect.
    again = replayer.apply_envelopes("site-a", [e_bad])
    assert [r for _, r in again] == [refused]


def test_a_failure_that_is_no_data_error_leaves_nothing_and_is_retried(
    db: Database, seed: Seeded, replayer: Replayer
) -> None:
    """A broken database (here: a table gone) is no reason to reject anyone's work."""
    good = seed.ready(activity_id="a-good")
    other = seed.ready(activity_id="a-other")
    e_good, e_other = envelope(good, 1), envelope(other, 1)
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE record_rows RENAME TO record_rows_away")
    with pytest.raises(Exception, match="record_rows"):
        replayer.apply_envelopes("site-a", [e_good, e_other])
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE record_rows_away RENAME TO record_rows")
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(LedgerEntry)) == 0
        assert rules.get_activity(s, good).last_seq == 0
    # The gateway sends the batch again: each envelope applies exactly once.
    results = replayer.apply_envelopes("site-a", [e_good, e_other])
    assert sorted(r.outcome for _, r in results) == ["applied", "applied"]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(LedgerEntry)) == 2


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


def _unchecked(env: WireEnvelope, **values: Any) -> WireEnvelope:
    """``env`` with values the wire schema would refuse: what an old gateway may send."""
    return WireEnvelope.model_construct(**{**dict(env), **values})


def test_values_the_database_refuses_cost_one_rejection_each(
    db: Database, seed: Seeded, replayer: Replayer
) -> None:
    ids = [seed.ready(activity_id=f"a-{n}") for n in range(1, 9)]
    year_one = datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))  # year 0 in UTC
    good = envelope(ids[0], 1)
    bad = {
        "base_version_int32": _unchecked(envelope(ids[1], 1), base_version=2**31),
        "seq_int64": _unchecked(envelope(ids[2], 1), seq=2**63),
        "created_at_year_0": _unchecked(envelope(ids[3], 1), created_at=year_one),
        "author_5000": _unchecked(envelope(ids[4], 1), author="a" * 5000),
        "nul_in_field_name": _unchecked(
            envelope(ids[5], 1), record={"site_ok": True, "no\x00te": "x"}
        ),
        "form_version_int64": _unchecked(envelope(ids[6], 1), form_version=2**63),
        # waits for seq 1 (a gap), then is refused at its turn
        "held_base_version": _unchecked(envelope(ids[7], 2), base_version=2**63),
    }
    results = replayer.apply_envelopes("site-a", [good, *bad.values()])
    by_id = {r.envelope_id: r for _, r in results}
    assert by_id[good.envelope_id].outcome == "applied"
    sqlite = db.sqlite  # SQLite holds 64-bit integers and any length of text
    expected = {
        "base_version_int32": "conflict" if sqlite else "unstorable",
        "seq_int64": "unstorable",
        "created_at_year_0": "unstorable",
        "author_5000": "permission" if sqlite else "unstorable",
        "nul_in_field_name": "validation",
        "form_version_int64": "unstorable",
    }
    got = {
        name: (by_id[env.envelope_id].outcome, by_id[env.envelope_id].code)
        for name, env in bad.items()
        if name in expected
    }
    assert got == {name: ("rejected", code) for name, code in expected.items()}
    assert "\\x00" in (by_id[bad["nul_in_field_name"].envelope_id].reason or "")
    for name in ("seq_int64", "created_at_year_0", "form_version_int64"):
        reason = by_id[bad[name].envelope_id].reason or ""
        assert reason.startswith("Central's database cannot store a value"), (name, reason)
    assert bad["held_base_version"].envelope_id not in by_id  # held: no answer yet
    with db.session() as s:
        entry = rules.envelope_of(s, str(bad["seq_int64"].envelope_id))
        assert (entry.outcome, entry.code, entry.seq) == ("rejected", "unstorable", 0)
        held = rules.envelope_of(s, str(bad["held_base_version"].envelope_id))
        assert (held.outcome, held.code, held.payload) == ("held", "unstorable", None)
    # The gap fills: seq 1 applies, the held one is rejected at its turn and consumes seq 2.
    first, after = envelope(ids[7], 1), envelope(ids[7], 3)
    results = replayer.apply_envelopes("site-a", [first])
    assert [(r.envelope_id, r.outcome, r.code) for _, r in results] == [
        (first.envelope_id, "applied", None),
        (bad["held_base_version"].envelope_id, "rejected", "unstorable"),
    ]
    ((_, res),) = replayer.apply_envelopes("site-a", [after])
    assert res.outcome == "applied"
    # Every refused one answers the same again, and its activity takes the next seq.
    by_id[bad["held_base_version"].envelope_id] = results[1][1]
    again = replayer.apply_envelopes("site-a", list(bad.values()))
    assert {r.envelope_id: r for _, r in again} == {
        env.envelope_id: by_id[env.envelope_id] for env in bad.values()
    }
    ((_, nxt),) = replayer.apply_envelopes("site-a", [envelope(ids[3], 2)])
    assert nxt.outcome == "applied"


def test_cancel_clears_a_refused_envelope(db: Database, seed: Seeded, replayer: Replayer) -> None:
    aid = seed.ready()
    held = _unchecked(envelope(aid, 2), base_version=2**63)  # waits for seq 1
    assert replayer.apply_envelopes("site-a", [held]) == []
    with db.session() as s:
        _, _, rejected = rules.cancel(s, aid, "stop")
    assert [(r.envelope_id, r.code) for _, r in rejected] == [(held.envelope_id, "canceled")]
    # A refused envelope arriving after the cancel is answered "canceled" too.
    late = _unchecked(
        envelope(aid, 1), created_at=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    )
    ((_, res),) = replayer.apply_envelopes("site-a", [late])
    assert (res.outcome, res.code) == ("rejected", "canceled")
    assert replayer.apply_envelopes("site-a", [held]) == [("site-a", rejected[0][1])]


def test_one_poison_envelope_costs_a_few_transactions_not_one_per_batch_mate(
    db: Database, seed: Seeded, replayer: Replayer
) -> None:
    """The refused batch is split in halves: about 2 log2(n) commits, not n."""
    from sqlalchemy import event

    ids = [seed.ready(activity_id=f"p-{n}") for n in range(64)]
    envs = [envelope(aid, 1) for aid in ids]
    envs[37] = _unchecked(envs[37], form_version=2**63)
    commits: list[int] = []
    listener = lambda _conn: commits.append(1)  # noqa: E731
    event.listen(db.engine, "commit", listener)
    try:
        results = replayer.apply_envelopes("site-a", envs)
    finally:
        event.remove(db.engine, "commit", listener)
    outcomes = {r.envelope_id: (r.outcome, r.code) for _, r in results}
    assert outcomes.pop(envs[37].envelope_id) == ("rejected", "unstorable")
    assert set(outcomes.values()) == {("applied", None)} and len(outcomes) == 63
    assert len(commits) <= 2 * 6 + 1, len(commits)  # log2(64) = 6 levels, and the rejection
