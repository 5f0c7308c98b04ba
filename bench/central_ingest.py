"""Central ingest: envelopes/s through the replay path vs raw INSERTs of the same rows.

    .venv/bin/python bench/central_ingest.py [--envelopes 5000] [--batch 100] [--pg URL]
        [--gateways 1000] [--fleet-batches 5] [--repeat 3]

For each database (SQLite file; PostgreSQL when a server answers at
``OUTPOST_TEST_POSTGRES_URL``, default the local one) it applies N envelopes
of about 2 KiB with 5 child rows each, in batches as gateways send them,
through :class:`cloud_bridge.replay.Replayer` (the one replay path:
idempotency check, seq order, form validation, ledger rows, record replace,
one commit per batch). In the same run it INSERTs the same ledger rows and
child rows raw (Core executemany, one commit per batch) and prints both rates
and their ratio.

Then, in the same run, **a fleet**: ``--gateways`` gateways at once, each
sending ``--fleet-batches`` small batches of 2 envelopes (one activity each,
the next batch after the previous one's answer, as a gateway with a backlog
of small batches does), through the bridge's :class:`GroupCommitter` with
its default settings ("group commit") and with one batch per transaction
("one commit per batch", the bridge before group commit). The fleet rate
against the bulk rate is the figure of issue 18 (target: within 2x).
Everything is repeated ``--repeat`` times; the spread is min-max.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, insert
from sqlalchemy.engine import make_url

from cloud_bridge import rules
from cloud_bridge.db import Database
from cloud_bridge.groupcommit import GroupCommitter
from cloud_bridge.migration import migrate
from cloud_bridge.models import LedgerEntry
from cloud_bridge.replay import Replayer, make_part
from outpost.forms import ActivityTypeDef
from outpost.wire.schemas import EnvelopeBatch, WireEnvelope

SEQS = 5  # envelopes per activity
ROWS = 5
FORM = {
    "fields": [
        {"name": "site_ok", "type": "boolean", "required": True},
        {"name": "notes", "type": "text"},
        {"name": "weather", "type": "choice", "options": ["dry", "wet"]},
        {"name": "visited", "type": "date"},
    ],
    "tables": [
        {
            "name": "readings",
            "fields": [
                {"name": "meter", "type": "text", "required": True},
                {"name": "value", "type": "number"},
                {"name": "comment", "type": "text"},
            ],
        }
    ],
}


def activity_count(n: int) -> int:
    return max(1, -(-n // SEQS))


raw_rows = Table(
    "bench_raw_rows",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("activity_id", String(64)),
    Column("table_name", String(64)),
    Column("row_index", Integer),
    Column("data", JSON),
)


def make_envelopes(n: int, gateway: str, activity_prefix: str) -> list[WireEnvelope]:
    """SEQS envelopes per activity, interleaved: a batch holds one envelope of each of
    many activities, so no two envelopes of a batch touch the same record (no write
    can be coalesced; the fair case against raw INSERTs)."""
    now = datetime.now(UTC)
    out = []
    activities = activity_count(n)
    for i in range(n):
        seq, a = divmod(i, activities)
        out.append(
            WireEnvelope(
                envelope_id=uuid.uuid4(),
                activity_id=f"{activity_prefix}{a}",
                seq=seq + 1,
                base_version=1,
                status="draft",
                created_at=now,
                received_at=now,
                author="ana",
                form_version=1,
                record={
                    "site_ok": True,
                    "notes": ("fence inspected, gate hinge rusted; " * 30)[:1100],
                    "weather": "dry",
                    "visited": "2026-11-23",
                },
                tables={
                    "readings": [
                        {"meter": f"M-{r}", "value": r * 1.5, "comment": "steady reading " * 5}
                        for r in range(ROWS)
                    ]
                },
                attachments=[],
            )
        )
    return out


def seed(db: Database, prefix: str, activities: int) -> None:
    with db.session() as s:
        if s.get(rules.User, "ana") is None:
            rules.put_user(s, "ana", "pw-ana-bench", True, sites=["site-bench"])
            rules.put_activity_type(
                s,
                ActivityTypeDef.model_validate(
                    {"name": "inspection", "offline": True, "form": FORM}
                ),
            )
        for a in range(activities):
            act = rules.create_activity(s, "bench", "inspection", "ana", f"{prefix}{a}")
            rules.approve(s, act.id, "ana")
    with db.session() as s:
        for a in range(activities):
            rules.check_out(s, f"{prefix}{a}", "site-bench")


def batches(envs: list[WireEnvelope], size: int) -> list[EnvelopeBatch]:
    now = datetime.now(UTC)
    return [
        EnvelopeBatch(
            gateway_id="site-bench",
            batch_id=uuid.uuid4(),
            sent_at=now,
            envelopes=envs[i : i + size],
        )
        for i in range(0, len(envs), size)
    ]


def bench_replay(db: Database, envs: list[WireEnvelope], size: int) -> float:
    replayer = Replayer(db)
    start = time.perf_counter()
    applied = 0
    for batch in batches(envs, size):
        for _, r in replayer.apply_batch("site-bench", batch):
            if r.outcome != "applied":
                raise SystemExit(f"unexpected {r.outcome} {r.code}: {r.reason}")
            applied += 1
    elapsed = time.perf_counter() - start
    assert applied == len(envs), (applied, len(envs))
    return len(envs) / elapsed


def bench_raw(db: Database, envs: list[WireEnvelope], size: int) -> float:
    raw_rows.create(db.engine, checkfirst=True)
    ledger = LedgerEntry.__table__
    start = time.perf_counter()
    for i in range(0, len(envs), size):
        chunk = envs[i : i + size]
        now = datetime.now(UTC)
        with db.engine.begin() as conn:
            conn.execute(
                insert(ledger),
                [
                    {
                        "envelope_id": str(e.envelope_id),
                        "gateway_id": "site-raw",
                        "activity_id": e.activity_id,
                        "checkout_no": 1,
                        "seq": e.seq,
                        "base_version": e.base_version,
                        "status": e.status,
                        "author": e.author,
                        "form_version": e.form_version,
                        "outcome": "applied",
                        "created_at": e.created_at,
                        "received_at": e.received_at,
                        "arrived_at": now,
                        "applied_at": now,
                        "activity_version": 1,
                        "checked_in": False,
                        "attachments": [],
                        "payload": {"record": e.record},
                    }
                    for e in chunk
                ],
            )
            conn.execute(
                insert(raw_rows),
                [
                    {"activity_id": e.activity_id, "table_name": t, "row_index": n, "data": row}
                    for e in chunk
                    for t, rows in e.tables.items()
                    for n, row in enumerate(rows)
                ],
            )
    return len(envs) / (time.perf_counter() - start)


def seed_fleet(db: Database, prefix: str, gateways: int) -> None:
    """One checked-out activity per gateway ``{prefix}gw-{i}`` (at most 1,000: a user's sites)."""
    with db.session() as s:
        sites = [f"{prefix}gw-{g}" for g in range(gateways)]
        rules.put_user(s, "ana", "pw-ana-bench", True, sites=sites)
        for g in range(gateways):
            act = rules.create_activity(s, "bench", "inspection", "ana", f"{prefix}a{g}")
            rules.approve(s, act.id, "ana")
    with db.session() as s:
        for g in range(gateways):
            rules.check_out(s, f"{prefix}a{g}", f"{prefix}gw-{g}")


def bench_fleet(
    db: Database,
    prefix: str,
    gateways: int,
    per_gateway: int,
    grouped: bool,
    first_seq: int = 1,
    inflight: int = 1,
) -> float:
    """Envelopes/s with ``gateways`` gateways each sending batches of 2, concurrently."""
    import asyncio

    streams = []
    for g in range(gateways):
        envs = make_envelopes(2 * per_gateway, "x", f"{prefix}a{g}")
        for i, e in enumerate(envs):  # one activity, seq 1, 2, 3...
            envs[i] = e.model_copy(update={"activity_id": f"{prefix}a{g}", "seq": first_seq + i})
        gid = f"{prefix}gw-{g}"
        streams.append([b.model_copy(update={"gateway_id": gid}) for b in batches(envs, 2)])
    committer = GroupCommitter(
        Replayer(db),
        threads=1 if db.sqlite else 2,
        max_envelopes=2000 if grouped else 1,
        queue_max_envelopes=10**9,
    )

    async def gateway(stream: list[EnvelopeBatch]) -> int:
        """Up to ``inflight`` batches awaiting their answer, as a gateway's uplink keeps."""
        applied = 0
        window: list[asyncio.Future[Any]] = []
        for b in stream + [None] * inflight:  # type: ignore[list-item]
            if b is not None:
                window.append(
                    asyncio.ensure_future(committer.async_apply(make_part(b.gateway_id, b)))
                )
            if len(window) >= inflight or (b is None and window):
                for _, r in await window.pop(0):
                    if r.outcome != "applied":
                        raise SystemExit(f"unexpected {r.outcome} {r.code}: {r.reason}")
                    applied += 1
        return applied

    async def fleet() -> int:
        return sum(await asyncio.gather(*(gateway(s) for s in streams)))

    try:
        start = time.perf_counter()
        applied = asyncio.run(fleet())
        elapsed = time.perf_counter() - start
    finally:
        committer.shutdown()
    assert applied == 2 * per_gateway * gateways, applied
    return applied / elapsed


def run(
    label: str,
    url: str,
    n: int,
    size: int,
    gateways: int,
    per_gateway: int,
    rep: int,
    inflight: int = 1,
) -> dict[str, Any]:
    db = Database.from_url(url)
    try:
        migrate(db.engine)
        seed(db, "b-", activity_count(n))
        bulk_envs = make_envelopes(n, "site-bench", "b-")
        raw_envs = make_envelopes(n, "site-raw", "r-")
        env_bytes = len(bulk_envs[0].model_dump_json())
        replay_rate = bench_replay(db, bulk_envs, size)
        raw_rate = bench_raw(db, raw_envs, size)
        seed_fleet(db, "f-", gateways)
        fleet_rate = bench_fleet(db, "f-", gateways, per_gateway, True, inflight=inflight)
        # The slow baseline on a fifth of the fleet (it saturates long before), continuing
        # those gateways' seqs.
        single_rate = bench_fleet(
            db, "f-", min(gateways, max(50, gateways // 5)), per_gateway, False, 2 * per_gateway + 1
        )
    finally:
        db.dispose()
    load = os.getloadavg()[0]
    result = {
        "db": label,
        "run": rep,
        "load1": round(load, 1),
        "envelopes": n,
        "envelope_bytes": env_bytes,
        "batch": size,
        "replay_per_s": round(replay_rate),
        "raw_insert_per_s": round(raw_rate),
        "ratio": round(replay_rate / raw_rate, 3),
        "gateways": gateways,
        "inflight": inflight,
        "fleet_group_commit_per_s": round(fleet_rate),
        "fleet_commit_per_batch_per_s": round(single_rate),
        "fleet_vs_bulk": round(fleet_rate / replay_rate, 3),
    }
    print(
        f"{label:10s} run {rep} (load {load:.1f}): {n} envelopes of {env_bytes} B, "
        f"{ROWS} child rows, batches of {size}: "
        f"replay {replay_rate:,.0f}/s vs raw INSERT {raw_rate:,.0f}/s "
        f"(ratio {replay_rate / raw_rate:.2f}); {gateways} gateways x batches of 2: "
        f"group commit {fleet_rate:,.0f}/s ({fleet_rate / replay_rate:.2f} of bulk), "
        f"one commit per batch {single_rate:,.0f}/s ({min(gateways, max(50, gateways // 5))} gateways)",
        flush=True,
    )
    return result


def spread(results: list[dict[str, Any]]) -> None:
    keys = (
        "replay_per_s",
        "raw_insert_per_s",
        "fleet_group_commit_per_s",
        "fleet_commit_per_batch_per_s",
        "fleet_vs_bulk",
    )
    for label in sorted({r["db"] for r in results}):
        rows = [r for r in results if r["db"] == label]
        parts = []
        for k in keys:
            values = sorted(r[k] for r in rows)
            parts.append(f"{k} {values[len(values) // 2]} ({values[0]}-{values[-1]})")
        print(f"{label:10s} median (min-max) over {len(rows)}: " + ", ".join(parts))


@contextmanager
def postgres_database(server: str) -> Iterator[str | None]:
    try:
        import psycopg

        u = make_url(server)
        admin = psycopg.connect(
            host=u.host or "127.0.0.1",
            port=u.port or 5432,
            user=u.username or "postgres",
            password=u.password,
            dbname=u.database or "postgres",
            autocommit=True,
            connect_timeout=3,
        )
    except Exception as exc:
        print(f"postgresql skipped: no server at {server} ({exc.__class__.__name__})")
        yield None
        return
    name = f"outpost_bench_{uuid.uuid4().hex[:8]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield u.set(database=name).render_as_string(hide_password=False)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envelopes", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "OUTPOST_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--gateways", type=int, default=1000)
    parser.add_argument("--fleet-batches", type=int, default=5, help="batches per gateway")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--inflight", type=int, default=1, help="batches a gateway keeps in flight")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    results = []
    fleet = (args.gateways, args.fleet_batches)
    for rep in range(1, args.repeat + 1):
        if not args.no_sqlite:
            with tempfile.TemporaryDirectory() as tmp:
                url = f"sqlite:///{tmp}/central.db"
                results.append(
                    run("sqlite", url, args.envelopes, args.batch, *fleet, rep, args.inflight)
                )
        with postgres_database(args.pg) as pg:
            if pg is not None:
                results.append(
                    run("postgresql", pg, args.envelopes, args.batch, *fleet, rep, args.inflight)
                )
    spread(results)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
