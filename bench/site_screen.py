"""Benchmark: what the site lead's Site screen costs the gateway, against its floor.

Not a test. Seeds a gateway store in a temp dir with a busy site's history
(``--envelopes`` envelopes over ``--activities`` activities, ``--rejections``
of them refused by central, half of those corrected by a later save, files
waiting to go up), starts a real gateway process (no MQTT, no mDNS), and
asks, one request at a time as one phone does:

- ``GET /api/v1/site``   (the Site screen's poll, every 5 s while it is open)
- ``GET /api/v1/status`` (the crew's Pending screen, for comparison)
- ``GET /healthz``       (the floor: the same server, HTTP and middleware only)

Prints latency (median, p95) and the gateway's CPU per request, the ratio
to the floor, and what one open Site screen costs in CPU (per-request CPU
over the 5 s poll interval).

    .venv/bin/python bench/site_screen.py [--envelopes 20000] [--rejections 300] [--requests 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gateway_ingest import _cpu_s, _free_port, start, stop  # noqa: E402
from tests.support.store_tasks import SqlWrite  # noqa: E402

POLL_S = 5.0  # the Site screen's refresh interval (gateway/web/static/js/app.js)


def seed(data_dir: Path, n_envelopes: int, n_activities: int, n_rejections: int) -> None:
    from sqlalchemy import insert

    from gateway.store import Store
    from gateway.store.activities import upsert_activity
    from gateway.store.schema import attachments, envelopes
    from gateway.store.users import replace_users
    from outpost.forms import FormDefinition
    from outpost.passwords import hash_password
    from outpost.wire.schemas import ActivityWire, UserPush, UserWire

    form = FormDefinition.model_validate(
        {"fields": [{"name": "site_ok", "type": "boolean"}, {"name": "notes", "type": "text"}]}
    )
    now = datetime.now(UTC)
    crew = [f"crew{i}" for i in range(20)]
    per_activity = max(1, n_envelopes // n_activities)
    store = Store(data_dir / "gateway.db").open()
    try:

        def work(conn: Any) -> None:
            replace_users(
                conn,
                UserPush(
                    gateway_id="bench",
                    users=[
                        UserWire(
                            username="lead",
                            password_hash=hash_password("bench-password"),
                            offline=True,
                            site_lead=True,
                        )
                    ]
                    + [
                        UserWire(username=u, password_hash="$argon2id$x" * 2, offline=True)
                        for u in crew
                    ],
                    offline_types=["inspection"],
                    pushed_at=now,
                ),
            )
            rows = []
            refused = 0
            for a in range(n_activities):
                who = crew[a % len(crew)]
                act = ActivityWire(
                    id=f"act-{a}",
                    title=f"Inspection {a}",
                    type="inspection",
                    form=form,
                    form_version=1,
                    responsible=who,
                    version=1,
                )
                upsert_activity(conn, act, who, now)
                for seq in range(1, per_activity + 1):
                    at = now - timedelta(minutes=per_activity - seq + a)
                    state, code, reason = "applied", None, None
                    if seq == per_activity:
                        state = "queued"
                    if refused < n_rejections and seq == per_activity - (a % 2):
                        state, code, reason = "rejected", "conflict", "edited online meanwhile"
                        refused += 1
                    rows.append(
                        {
                            "envelope_id": str(uuid.uuid4()),
                            "activity_id": act.id,
                            "author": who,
                            "seq": seq,
                            "status": "completed" if seq == per_activity else "draft",
                            "base_version": 1,
                            "created_at": at,
                            "received_at": at,
                            "form_version": 1,
                            "body": json.dumps({"record": {"site_ok": True}}),
                            "body_hash": uuid.uuid4().hex * 2,
                            "size": 200,
                            "state": state,
                            "code": code,
                            "reason": reason,
                            "result_at": at if state in ("applied", "rejected") else None,
                            "attempts": 1,
                        }
                    )
            for i in range(0, len(rows), 5000):
                conn.execute(insert(envelopes), rows[i : i + 5000])
            conn.execute(
                insert(attachments),
                [
                    {
                        "sha256": uuid.uuid4().hex * 2,
                        "size": 2_000_000,
                        "received": 2_000_000,
                        "complete": True,
                        "path": f"blobs/{i}",
                        "created_at": now,
                        "completed_at": now,
                        "uploaded": 0,
                    }
                    for i in range(100)
                ],
            )

        store.write_sync(SqlWrite(work))
    finally:
        store.close()


def sign_in(url: str) -> str:
    req = urllib.request.Request(
        f"{url}/api/v1/session",
        data=json.dumps({"username": "lead", "password": "bench-password"}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return str(json.loads(r.read())["token"])


def measure(url: str, path: str, token: str, n: int, pid: int) -> dict[str, float]:
    req = urllib.request.Request(f"{url}{path}", headers={"Authorization": f"Bearer {token}"})
    for _ in range(5):  # warm-up
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
    times = []
    cpu0 = _cpu_s(pid)
    size = 0
    for _ in range(n):
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=30) as r:
            size = len(r.read())
        times.append(time.perf_counter() - t0)
    cpu = (_cpu_s(pid) - cpu0) * 1000 / n
    times.sort()
    return {
        "p50_ms": statistics.median(times) * 1000,
        "p95_ms": times[int(n * 0.95) - 1] * 1000,
        "cpu_ms": cpu,
        "bytes": size,
    }


def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="outpost-bench-") as tmp:
        tmp_path = Path(tmp)
        data_dir = tmp_path / "gw"
        data_dir.mkdir()
        seed(data_dir, args.envelopes, args.activities, args.rejections)
        port = _free_port()
        cfg = tmp_path / "gateway.toml"
        cfg.write_text(
            f'[gateway]\nid = "bench"\nsite = "Bench"\ndata_dir = "{data_dir}"\n'
            f'[lan]\nhost = "127.0.0.1"\nport = {port}\nsignin_slowdown_s = 0\n'
            "[mqtt]\nenabled = false\n[discovery]\nenabled = false\n"
        )
        proc = start(
            [sys.executable, "-m", "gateway", "run", "--config", str(cfg)], tmp_path / "gw.log"
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit((tmp_path / "gw.log").read_text()[-2000:]) from None
                    time.sleep(0.05)
            token = sign_in(url)
            return {
                path: measure(url, path, token, args.requests, proc.pid)
                for path in ("/healthz", "/api/v1/status", "/api/v1/site")
            }
        finally:
            stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envelopes", type=int, default=20_000)
    parser.add_argument("--activities", type=int, default=500)
    parser.add_argument("--rejections", type=int, default=300)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs = [run(args) for _ in range(args.repeat)]
    print(
        f"{args.envelopes} envelopes over {args.activities} activities, "
        f"{args.rejections} rejected; {args.requests} sequential requests, {args.repeat} runs"
    )
    print(f"{'route':<16}{'p50 ms':>22}{'p95 ms':>24}{'CPU ms/req':>22}{'x floor':>9}{'bytes':>8}")
    floor = statistics.median(r["/healthz"]["p50_ms"] for r in runs)
    for path in ("/healthz", "/api/v1/status", "/api/v1/site"):
        p50 = [r[path]["p50_ms"] for r in runs]
        p95 = [r[path]["p95_ms"] for r in runs]
        cpu = [r[path]["cpu_ms"] for r in runs]

        def spread(xs: list[float]) -> str:
            return f"{statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"

        print(
            f"{path:<16}{spread(p50):>22}{spread(p95):>24}{spread(cpu):>22}"
            f"{statistics.median(p50) / floor:>9.1f}{int(runs[0][path]['bytes']):>8}"
        )
    site_cpu = statistics.median(r["/api/v1/site"]["cpu_ms"] for r in runs)
    print(
        f"one open Site screen (a poll every {POLL_S:.0f} s): "
        f"{site_cpu / (POLL_S * 1000) * 100:.2f} % of one core"
    )


if __name__ == "__main__":
    main()
