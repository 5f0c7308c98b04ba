"""Benchmark: the submission's one activity statement, against its floor (issue 17, form versions).

Not a test. Every ``POST /api/v1/envelopes`` runs one statement in the writer
(``gateway/store/submissions.py``, ``_RAW_ACTIVITY``): the activity, the
definition of the form version the envelope names (schema step 6), its last
seq, its completed lock, whether the envelope id is known. Seeds a store in
a temp dir with one activity holding ``--envelopes`` drafts, then times the
statement on the driver connection, as the writer runs it:

- naming a version (``form_version`` in the body, as the web app sends it);
- naming none (the version the activity is filled against: its latest
  envelope's);
- the floor: the activity's primary-key lookup alone, on the same connection.

Prints the median and spread of ``--rounds`` rounds of ``--runs`` runs each,
and the ratio to the floor.

    .venv/bin/python bench/submission_statement.py [--envelopes 5000] [--runs 5000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.store.activities import upsert_activity  # noqa: E402
from gateway.store.store import Store  # noqa: E402
from gateway.store.submissions import _RAW_ACTIVITY, body_hash, store_envelope  # noqa: E402
from outpost.forms import FormDefinition  # noqa: E402
from outpost.wire.schemas import ActivityWire, EnvelopeBody  # noqa: E402
from tests.support.store_tasks import SqlWrite  # noqa: E402

AT = datetime(2026, 11, 30, tzinfo=UTC)


def seed(path: Path, envelopes: int) -> None:
    form = FormDefinition.model_validate({"fields": [{"name": "n", "type": "number"}]})
    store = Store(path).open()

    def work(conn: Any) -> None:
        for version in (1, 2):  # a draft begun on 1, then 2 arrived
            act = ActivityWire(
                id="a", title="a", type="t", form=form, form_version=version,
                responsible="u", version=1,
            )  # fmt: skip
            upsert_activity(conn, act, "u", AT)
            if version == 2:
                break
            for seq in range(1, envelopes + 1):
                body = EnvelopeBody.model_validate(
                    {
                        "envelope_id": str(uuid.uuid4()),
                        "activity_id": "a",
                        "seq": seq,
                        "base_version": 1,
                        "status": "draft",
                        "created_at": "2026-11-30T09:00:00Z",
                        "record": {"n": seq},
                        "form_version": 1,
                    }
                )
                store_envelope(conn, body, body_hash(body), "u", AT)

    try:
        store.write_sync(SqlWrite(work))
    finally:
        store.close()


def per_run_us(conn: sqlite3.Connection, sql: str, params: list[Any], runs: int) -> float:
    start = time.perf_counter()
    for _ in range(runs):
        conn.execute(sql, params).fetchone()
    return (time.perf_counter() - start) / runs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envelopes", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gateway.db"
        seed(path, args.envelopes)
        conn = sqlite3.connect(path)
        eid = str(uuid.uuid4())
        cases = {
            "naming version 1": (_RAW_ACTIVITY.sql, _RAW_ACTIVITY.params({"aid": "a", "eid": eid, "fv": 1})),
            "naming none": (_RAW_ACTIVITY.sql, _RAW_ACTIVITY.params({"aid": "a", "eid": eid, "fv": None})),
            "floor: primary key": ("SELECT id FROM activities WHERE id = ?", ["a"]),
        }  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):  # interleaved, so load hits every case alike
            for name, (sql, params) in cases.items():
                times[name].append(per_run_us(conn, sql, params, args.runs))
        conn.close()
    floor = statistics.median(times["floor: primary key"])
    print(f"one activity, {args.envelopes} envelopes, {args.rounds} rounds of {args.runs} runs")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:20} median {median:6.1f} us  (min {min(values):.1f}, max {max(values):.1f})"
            f"  x{median / floor:.1f} the floor"
        )


if __name__ == "__main__":
    main()
