"""Group commit: many gateways' batches share a transaction; each keeps its own answer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import func, select

from cloud_bridge import rules
from cloud_bridge.config import ReplaySection
from cloud_bridge.db import Database
from cloud_bridge.groupcommit import Busy, GroupCommitter
from cloud_bridge.metrics import BridgeMetrics
from cloud_bridge.models import LedgerEntry, utcnow
from cloud_bridge.replay import Replayer, make_part
from cloud_bridge.service import Bridge
from outpost.wire import topics
from outpost.wire.schemas import BatchDeferred, EnvelopeBatch, WireEnvelope
from tests.cloud_bridge.conftest import (
    SITES,
    TOKEN,
    FakeGateway,
    Seeded,
    bridge_config,
    envelope,
)
from tests.cloud_bridge.test_replay import _install_refusing_trigger
from tests.support.broker import Broker

GATEWAYS = SITES[:6]


def batch(gateway_id: str, envelopes: list[WireEnvelope]) -> EnvelopeBatch:
    return EnvelopeBatch.model_construct(
        gateway_id=gateway_id, batch_id=uuid.uuid4(), sent_at=utcnow(), envelopes=envelopes
    )


def groups_of(metrics: BridgeMetrics) -> tuple[float, float]:
    """(commit groups, batches in them) so far."""
    count = sum_ = 0.0
    for metric in metrics.commit_groups.collect():
        for s in metric.samples:
            if s.name.endswith("_count"):
                count = s.value
            elif s.name.endswith("_sum"):
                sum_ = s.value
    return count, sum_


@pytest.fixture
def committer(db: Database) -> Iterator[GroupCommitter]:
    c = GroupCommitter(
        Replayer(db), threads=1 if db.sqlite else 2, wait_s=0.02, metrics=BridgeMetrics()
    )
    yield c
    c.shutdown()


async def test_many_gateways_share_commits_and_each_gets_its_own_results(
    db: Database, seed: Seeded, committer: GroupCommitter
) -> None:
    acts = {gw: [seed.ready(gw, f"a-{gw}-{i}") for i in range(3)] for gw in GATEWAYS}

    async def gateway(gw: str) -> list[tuple[str, int, str]]:
        seen = []
        for seq in (1, 2, 3):
            part = make_part(gw, batch(gw, [envelope(a, seq) for a in acts[gw]]))
            for to, r in await committer.async_apply(part):
                seen.append((to, seq, r.outcome))
        return seen

    answers = await asyncio.gather(*(gateway(gw) for gw in GATEWAYS))
    for gw, seen in zip(GATEWAYS, answers, strict=True):
        assert seen == [(gw, seq, "applied") for seq in (1, 2, 3) for _ in range(3)]
    count, batches = groups_of(committer.metrics)
    assert batches == 3 * len(GATEWAYS)
    assert count < batches  # batches of several gateways shared a commit
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(LedgerEntry)) == 9 * len(GATEWAYS)
        for gw in GATEWAYS:
            for a in acts[gw]:
                assert rules.get_activity(s, a).last_seq == 3
                assert rules.record_of(s, a)["seq"] == 3
        entries = s.scalars(select(LedgerEntry)).all()
        assert all(e.applied_at is not None and e.arrived_at <= e.applied_at for e in entries)
        assert {e.gateway_id for e in entries} == set(GATEWAYS)


async def test_a_gateways_batches_keep_their_order(
    db: Database, seed: Seeded, committer: GroupCommitter
) -> None:
    """Sent without waiting: the second batch's seq 2 is decided after the first's seq 1."""
    aid = seed.ready("site-a")
    first = make_part("site-a", batch("site-a", [envelope(aid, 1)]))
    second = make_part("site-a", batch("site-a", [envelope(aid, 2)]))
    r1, r2 = await asyncio.gather(committer.async_apply(first), committer.async_apply(second))
    assert [(r.outcome, r.envelope_id) for _, r in r1] == [
        ("applied", first.envelopes[0].envelope_id)
    ]
    assert [(r.outcome, r.envelope_id) for _, r in r2] == [
        ("applied", second.envelopes[0].envelope_id)
    ]


async def test_a_poison_envelope_costs_one_rejection_not_the_group(
    db: Database, seed: Seeded, committer: GroupCommitter
) -> None:
    acts = {gw: seed.ready(gw, f"a-{gw}") for gw in GATEWAYS}
    _install_refusing_trigger(db)
    bad = envelope(acts["site-b"], 1, tables={"readings": [{"meter": "boom"}]})
    parts = [
        make_part(gw, batch(gw, [bad if gw == "site-b" else envelope(acts[gw], 1)]))
        for gw in GATEWAYS
    ]
    answers = await asyncio.gather(*(committer.async_apply(p) for p in parts))
    for gw, results in zip(GATEWAYS, answers, strict=True):
        ((to, r),) = results
        assert to == gw
        expected = ("rejected", "unstorable") if gw == "site-b" else ("applied", None)
        assert (r.outcome, r.code) == expected
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(LedgerEntry)) == len(GATEWAYS)


async def test_a_batch_that_cannot_be_applied_fails_alone(
    db: Database, seed: Seeded, committer: GroupCommitter
) -> None:
    """A failure that is no data error (here: a broken form) fails only its own batch."""
    good = seed.ready("site-a", "a-good")
    seed.activity_type("other")
    broken = seed.activity(type_name="other", activity_id="a-broken")
    with db.session() as s:
        rules.check_out(s, broken, "site-b")
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE activity_types SET form = '{\"fields\": 5}' WHERE name = 'other'"
        )
    ok_part = make_part("site-a", batch("site-a", [envelope(good, 1)]))
    bad_part = make_part("site-b", batch("site-b", [envelope(broken, 1)]))
    ok, bad = await asyncio.gather(
        committer.async_apply(ok_part), committer.async_apply(bad_part), return_exceptions=True
    )
    assert isinstance(bad, Exception)
    assert not isinstance(ok, BaseException)
    assert [r.outcome for _, r in ok] == ["applied"]
    with db.session() as s:
        assert rules.get_activity(s, broken).last_seq == 0


async def test_a_replay_thread_whose_connection_died_reconnects(
    db: Database, seed: Seeded, committer: GroupCommitter
) -> None:
    """A replay thread keeps its connection between groups; when the database drops it
    (a restart, an idle timeout), the next batch is applied on a fresh one, once."""
    if db.sqlite:
        pytest.skip("a file has no server to drop the connection")
    aid = seed.ready("site-a")
    first = make_part("site-a", batch("site-a", [envelope(aid, 1)]))
    assert [r.outcome for _, r in await committer.async_apply(first)] == ["applied"]
    with db.engine.begin() as conn:
        killed = conn.exec_driver_sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).scalar()
    assert killed  # the replay threads' kept connections were there to kill
    second = make_part("site-a", batch("site-a", [envelope(aid, 2), envelope(aid, 3)]))
    results = await committer.async_apply(second)
    assert [(r.outcome, r.envelope_id) for _, r in results] == [
        ("applied", e.envelope_id) for e in second.envelopes
    ]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(LedgerEntry)) == 3
        assert rules.get_activity(s, aid).last_seq == 3


async def test_a_full_queue_answers_busy(db: Database, seed: Seeded) -> None:
    aid = seed.ready("site-a")
    # A long wait keeps the first batch queued while the next ones arrive.
    committer = GroupCommitter(Replayer(db), wait_s=0.3, max_envelopes=100, queue_max_envelopes=2)
    try:
        first = asyncio.ensure_future(
            committer.async_apply(make_part("site-a", batch("site-a", [envelope(aid, 1)])))
        )
        await asyncio.sleep(0)
        second = make_part("site-b", batch("site-b", [envelope(aid, 1), envelope(aid, 2)]))
        with pytest.raises(Busy) as raised:
            await committer.async_apply(second)
        assert raised.value.retry_after_s > 0 and raised.value.queued == 1
        assert [r.outcome for _, r in await first] == ["applied"]
    finally:
        committer.shutdown()


async def test_a_busy_bridge_answers_batch_deferred(
    central_db_url: str,
    tmp_path: Path,
    broker: Broker,
    gateways: Callable[[str], Awaitable[FakeGateway]],
) -> None:
    """Over its queue bound the bridge says so at once; nothing of that batch is applied."""
    config = bridge_config(central_db_url, tmp_path / "central", broker.port)
    # A long group wait keeps site-a's batch queued while site-b's arrives.
    replay = ReplaySection(group_wait_ms=1000, queue_max_envelopes=2, retry_after_s=7)
    b = Bridge(config.model_copy(update={"replay": replay}))
    await b.async_start()
    try:
        await b.async_wait_mqtt(10)
        assert b.db is not None
        seed = Seeded(b.db)
        a = await asyncio.to_thread(seed.ready, "site-a", "a-1")
        c = await asyncio.to_thread(seed.ready, "site-b", "b-1")
        gw_a, gw_b = await gateways("site-a"), await gateways("site-b")
        await gw_a.publish(topics.UP_ENVELOPES, gw_a.batch([envelope(a, 1)]))
        # site-a's batch is in the queue, waiting out the group wait (a fixed 0.3 s
        # sleep here did not make sure of that on a loaded machine)
        committer = b.committer
        assert committer is not None
        async with asyncio.timeout(10):
            while committer.queued_envelopes != 1:
                await asyncio.sleep(0.01)
        deferred_batch = gw_b.batch([envelope(c, 1), envelope(c, 2)])
        await gw_b.publish(topics.UP_ENVELOPES, deferred_batch)
        answer = await gw_b.expect(topics.DOWN_RESULTS, timeout=15)
        assert isinstance(answer, BatchDeferred)
        assert (answer.batch_id, answer.retry_after_s) == (deferred_batch.batch_id, 7)
        (res,) = (await gw_a.results(1)).values()
        assert res.outcome == "applied"
        db = b.db

        def last_seq() -> int:
            with db.session() as s:
                return rules.get_activity(s, c).last_seq

        assert await asyncio.to_thread(last_seq) == 0
        # Sent again once the queue is short: applied.
        await gw_b.publish(topics.UP_ENVELOPES, deferred_batch)
        assert {r.outcome for r in (await gw_b.results(2)).values()} == {"applied"}
        # The queueing is on /metrics: site-a's batch waited the group wait there.
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                b.admin_url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as resp,
        ):
            text = await resp.text()
        samples = {
            line.split(" ")[0]: float(line.split(" ")[1])
            for line in text.splitlines()
            if line.startswith("outpost_bridge_replay")
        }
        assert samples["outpost_bridge_replay_busy_total"] == 1
        assert samples["outpost_bridge_replay_queue_delay_seconds_count"] == 2
        assert samples["outpost_bridge_replay_queue_delay_seconds_sum"] >= 0.9  # 1 s group wait
        assert samples["outpost_bridge_replay_queued_envelopes"] == 0
    finally:
        await b.async_stop()
