"""Export throughput and the bridge's memory on a large export, against a raw read.

Seeds one activity type with ``--records`` applied records (a ~1 KiB note
and 5 child rows each) straight into a central database, starts a real
``outpost-bridge run`` on it, and downloads ``GET /api/v1/exports/{type}``
as CSV (the records) and as ZIP (records + child table), sampling the
bridge's resident memory (``/proc/<pid>/status`` VmRSS) every 20 ms. The
physical limit in the same run: the same rows read with a plain
SQLAlchemy Core ``SELECT`` streamed in this process (decoded, not written
anywhere). Repeats each download ``--repeat`` times and prints the spread.

    .venv/bin/python bench/export.py --records 100000 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.central_ingest import postgres_database
from cloud_bridge import rules
from cloud_bridge.db import Database
from cloud_bridge.migration import migrate
from cloud_bridge.models import Activity, Record, RecordRow, User
from outpost.forms import ActivityTypeDef
from tests.support.broker import Broker, free_port, wait_port

TOKEN = "bench-token-0123456789"
FORM = {
    "fields": [
        {"name": "site_ok", "type": "boolean"},
        {"name": "notes", "type": "text"},
        {"name": "reading_count", "type": "integer"},
        {"name": "temperature", "type": "number"},
    ],
    "tables": [
        {
            "name": "readings",
            "fields": [
                {"name": "meter", "type": "text"},
                {"name": "value", "type": "number"},
                {"name": "note", "type": "text"},
            ],
        }
    ],
}
NOTE = (
    "Fence cut on the north side near the gate, about two metres; cattle tracks "
    "inside. Repaired with wire from the depot, photo attached. "
) * 6


def seed(url: str, records: int) -> None:
    db = Database.from_url(url)
    migrate(db.engine)
    with db.session() as s:
        rules.put_user(s, "ana", "correct horse battery", True)
        rules.put_activity_type(
            s, ActivityTypeDef.model_validate({"name": "visit", "offline": True, "form": FORM})
        )
    now = datetime.now(UTC)
    step = 2000
    with db.engine.begin() as conn:
        assert conn.execute(select(User.username)).first() is not None
        for start in range(0, records, step):
            ids = [f"act-{i:08d}" for i in range(start, min(records, start + step))]
            at = now - timedelta(seconds=records - start)
            conn.execute(
                insert(Activity),
                [
                    {
                        "id": aid,
                        "title": f"Visit {aid}",
                        "type": "visit",
                        "responsible": "ana",
                        "approver": "ana",
                        "state": "online",
                        "checkout_no": 1,
                        "last_seq": 2,
                        "version": 2,
                        "created_at": at,
                        "updated_at": at,
                    }
                    for aid in ids
                ],
            )
            conn.execute(
                insert(Record),
                [
                    {
                        "activity_id": aid,
                        "data": {
                            "site_ok": True,
                            "notes": NOTE,
                            "reading_count": 5,
                            "temperature": 21.5,
                        },
                        "envelope_id": f"00000000-0000-4000-8000-{i:012d}",
                        "seq": 2,
                        "status": "completed",
                        "attachments": [],
                        "form_version": 1,
                        "updated_at": at + timedelta(microseconds=i),
                    }
                    for i, aid in enumerate(ids, start)
                ],
            )
            conn.execute(
                insert(RecordRow),
                [
                    {
                        "activity_id": aid,
                        "table_name": "readings",
                        "row_index": r,
                        "data": {"meter": f"M{r}", "value": r * 1.25, "note": "steady"},
                    }
                    for aid in ids
                    for r in range(5)
                ],
            )
    db.dispose()


def raw_read(url: str) -> dict[str, float]:
    """Rows per second streaming the same rows with a plain SELECT (the read limit here)."""
    db = Database.from_url(url)
    rates: dict[str, float] = {}
    with db.engine.connect() as conn:
        conn = conn.execution_options(stream_results=True, yield_per=500, outpost_read_only=True)
        with conn.begin():
            total_rows, total_s = 0, 0.0
            for name, cols in (
                ("records", (Record.activity_id, Record.data, Record.updated_at)),
                ("readings", (RecordRow.activity_id, RecordRow.row_index, RecordRow.data)),
            ):
                t0 = time.perf_counter()
                rows = sum(1 for _ in conn.execute(select(*cols)))
                elapsed = time.perf_counter() - t0
                rates[name] = rows / elapsed
                total_rows += rows
                total_s += elapsed
            rates["both"] = total_rows / total_s
    db.dispose()
    return rates


@contextmanager
def bridge(url: str, workdir: Path, broker: Broker) -> Iterator[tuple[int, int]]:
    admin = free_port()
    config = workdir / "bridge.toml"
    config.write_text(
        f'[central]\ndatabase_url = "{url}"\ndata_dir = "{workdir}/central"\n'
        f'[admin]\nport = {admin}\ntoken = "{TOKEN}"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
    )
    with open(workdir / "bridge.log", "wb") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "outpost-bridge"), "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_port(admin, 60)
        yield admin, proc.pid
    finally:
        proc.terminate()
        proc.wait(20)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def download(port: int, pid: int, path: str) -> dict[str, Any]:
    peak = rss_kib(pid)
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_kib(pid))
            time.sleep(0.02)

    before = rss_kib(pid)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    size = 0
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as resp:
        while chunk := resp.read(256 * 1024):
            size += len(chunk)
    elapsed = time.perf_counter() - t0
    stop.set()
    sampler.join()
    return {"s": elapsed, "bytes": size, "rss_before_mib": before / 1024, "peak_mib": peak / 1024}


def run(name: str, url: str, records: int, repeat: int, broker: Broker) -> None:
    t0 = time.perf_counter()
    seed(url, records)
    print(
        f"{name}: seeded {records:,} records + {records * 5:,} rows in "
        f"{time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    raw = [raw_read(url) for _ in range(repeat)]
    with tempfile.TemporaryDirectory() as tmp, bridge(url, Path(tmp), broker) as (port, pid):
        for label, path, rows, limit in (
            ("csv records", "/api/v1/exports/visit?format=csv", records, "records"),
            (
                "csv readings",
                "/api/v1/exports/visit?format=csv&table=readings",
                records * 5,
                "readings",
            ),
            ("zip (both)", "/api/v1/exports/visit?format=zip", records * 6, "both"),
        ):
            runs = [download(port, pid, path) for _ in range(repeat)]
            rates = [rows / r["s"] for r in runs]
            mib_s = [r["bytes"] / r["s"] / 2**20 for r in runs]
            grow = [r["peak_mib"] - r["rss_before_mib"] for r in runs]
            raw_rate = statistics.median(x[limit] for x in raw)
            ratio = [r / raw_rate for r in rates]
            print(
                f"{name} {label}: {statistics.median(rates):,.0f} rows/s "
                f"({min(rates):,.0f}-{max(rates):,.0f}), {statistics.median(mib_s):.1f} MiB/s, "
                f"{runs[0]['bytes'] / 2**20:.0f} MiB; ratio to raw read "
                f"{statistics.median(ratio):.2f} ({min(ratio):.2f}-{max(ratio):.2f}); bridge RSS "
                f"{runs[0]['rss_before_mib']:.0f} MiB before, peak {max(r['peak_mib'] for r in runs):.0f}"
                f" MiB (+{min(grow):.0f} to +{max(grow):.0f})",
                flush=True,
            )
    for key in ("records", "readings", "both"):
        got = [x[key] for x in raw]
        print(
            f"{name} raw read {key}: {statistics.median(got):,.0f} rows/s "
            f"({min(got):,.0f}-{max(got):,.0f})",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "OUTPOST_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "broker").start()
        try:
            if args.only in (None, "sqlite"):
                run("sqlite", f"sqlite:///{tmp}/central.db", args.records, args.repeat, broker)
            if args.only in (None, "postgresql"):
                with postgres_database(args.pg) as url:
                    if url is not None:
                        run("postgresql", url, args.records, args.repeat, broker)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
