"""What a poison envelope costs central: batch throughput with and without one per batch.

    .venv/bin/python bench/central_poison.py [--envelopes 1000] [--batch 100] [--repeat 3]

A poison envelope here is one the *database* refuses (``form_version`` of
2^63, as an old gateway without the wire contract's bounds could send): the
batch's transaction fails, so central applies that batch one envelope per
transaction, rejects the bad one ``unstorable`` and applies the rest — the
expensive path (an envelope the contract refuses is cheaper: it is set
aside while the batch is read, before any transaction).

For each database (SQLite file; PostgreSQL when a server answers at
``OUTPOST_TEST_POSTGRES_URL``) it alternates clean rounds and poisoned
rounds (one bad envelope in every batch, at a random place) through
:class:`cloud_bridge.replay.Replayer`, ``--repeat`` times each, and prints
good envelopes applied per second (median, min-max), the poisoned/clean
ratio, what one poison envelope costs in milliseconds and in clean batches,
and both against raw INSERTs of the same rows measured in the same run
(``bench/central_ingest.py``'s floor). The load average is printed before
and after: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.central_ingest import (
    activity_count,
    batches,
    bench_raw,
    make_envelopes,
    postgres_database,
    seed,
)
from cloud_bridge.db import Database
from cloud_bridge.migration import migrate
from cloud_bridge.replay import Replayer
from outpost.wire.schemas import EnvelopeBatch, WireEnvelope

POISON_FORM_VERSION = 2**63  # past every database's integer column


def poisoned(batch: EnvelopeBatch, rng: random.Random) -> tuple[EnvelopeBatch, str]:
    """``batch`` with one envelope replaced by a poison twin (same id, activity and seq)."""
    envs = list(batch.envelopes)
    i = rng.randrange(len(envs))
    bad = WireEnvelope.model_construct(**{**dict(envs[i]), "form_version": POISON_FORM_VERSION})
    envs[i] = bad
    return EnvelopeBatch.model_construct(**{**dict(batch), "envelopes": envs}), str(bad.envelope_id)


def one_round(
    db: Database, prefix: str, n: int, size: int, poison: bool, rng: random.Random
) -> tuple[float, int, int]:
    """(seconds, good envelopes applied, batches) for one round of ``n`` envelopes."""
    seed(db, prefix, activity_count(n))
    work = batches(make_envelopes(n, "site-bench", prefix), size)
    bad_ids: set[str] = set()
    if poison:
        marked = [poisoned(b, rng) for b in work]
        work = [b for b, _ in marked]
        bad_ids = {eid for _, eid in marked}
    replayer = Replayer(db)
    applied = 0
    start = time.perf_counter()
    for batch in work:
        for _, r in replayer.apply_batch("site-bench", batch):
            if str(r.envelope_id) in bad_ids:
                if (r.outcome, r.code) != ("rejected", "unstorable"):
                    raise SystemExit(f"poison came back {r.outcome} {r.code}: {r.reason}")
            elif r.outcome != "applied":
                raise SystemExit(f"good envelope came back {r.outcome} {r.code}: {r.reason}")
            else:
                applied += 1
    elapsed = time.perf_counter() - start
    assert applied == n - len(bad_ids), (applied, n, len(bad_ids))
    return elapsed, applied, len(work)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f}/s ({min(values):,.0f}-{max(values):,.0f})"


def run(label: str, url: str, n: int, size: int, repeat: int) -> dict[str, Any]:
    rng = random.Random(13)
    db = Database.from_url(url)
    clean: list[float] = []
    dirty: list[float] = []
    cost_ms: list[float] = []
    try:
        migrate(db.engine)
        for r in range(repeat):
            t_clean, good_clean, nb = one_round(db, f"c{r}-", n, size, False, rng)
            t_dirty, good_dirty, _ = one_round(db, f"p{r}-", n, size, True, rng)
            clean.append(good_clean / t_clean)
            dirty.append(good_dirty / t_dirty)
            cost_ms.append((t_dirty - t_clean) / nb * 1000)  # per batch = per poison envelope
            clean_batch_ms = t_clean / nb * 1000
        raw = bench_raw(db, make_envelopes(n, "site-raw", "raw-"), size)
    finally:
        db.dispose()
    clean_med, dirty_med, cost_med = (statistics.median(v) for v in (clean, dirty, cost_ms))
    ratios = [d / c for d, c in zip(dirty, clean, strict=True)]
    result = {
        "db": label,
        "envelopes": n,
        "batch": size,
        "repeat": repeat,
        "clean_per_s": [round(v) for v in clean],
        "poisoned_per_s": [round(v) for v in dirty],
        "poisoned_over_clean": round(statistics.median(ratios), 3),
        "cost_per_poison_ms": [round(v, 1) for v in cost_ms],
        "clean_batch_ms": round(clean_batch_ms, 1),
        "raw_insert_per_s": round(raw),
    }
    print(
        f"{label:10s} {n} envelopes in batches of {size}, {repeat} rounds each:\n"
        f"  clean     {spread(clean)} good envelopes applied ({clean_med / raw:.2f} of raw INSERT "
        f"{raw:,.0f}/s)\n"
        f"  poisoned  {spread(dirty)} ({dirty_med / raw:.2f} of raw), one bad envelope per "
        f"batch: {statistics.median(ratios):.2f} of clean "
        f"({min(ratios):.2f}-{max(ratios):.2f})\n"
        f"  one poison envelope costs {cost_med:.0f} ms "
        f"({min(cost_ms):.0f}-{max(cost_ms):.0f}), {cost_med / clean_batch_ms:.1f} clean "
        f"batches of {size}",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envelopes", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "OUTPOST_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    # Each poison envelope logs two warnings by design; the figures are the output here.
    logging.disable(logging.WARNING)
    print(f"load average before: {os.getloadavg()[0]:.1f} (2 cores)", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/central.db"
        results.append(run("sqlite", url, args.envelopes, args.batch, args.repeat))
    with postgres_database(args.pg) as pg:
        if pg is not None:
            results.append(run("postgresql", pg, args.envelopes, args.batch, args.repeat))
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
