"""Benchmark: envelopes/s a gateway acknowledges durably, against its two floors.

Not a test. Starts, in a temp dir on the same disk:

1. a real gateway process (``python -m gateway run``; no MQTT, no mDNS),
   seeded with one activity per client, and 50 concurrent HTTP clients that
   each post 2 KiB envelopes (seq 1, 2, 3, …) and wait for their 201;
2. the HTTP floor: a bare aiohttp process whose handler reads the body and
   answers 201 without doing anything, driven by the same client code;
3. the storage floor: raw SQLite inserts of the same rows with the gateway's
   ``synchronous`` setting (WAL), one row per commit and batched.

Prints envelopes/s, p50/p99 latency and the ratios.

    .venv/bin/python bench/gateway_ingest.py [--clients 50] [--seconds 8] [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.store_tasks import SqlWrite  # noqa: E402

ENVELOPE_BYTES = 2048
GATEWAY_CMD = [sys.executable, "-m", "gateway", "run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def envelope(activity_id: str, seq: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "envelope_id": str(uuid.uuid4()),
        "activity_id": activity_id,
        "seq": seq,
        "base_version": 3,
        "status": "draft",
        "created_at": "2026-11-23T09:00:00Z",
        "record": {"site_ok": True, "notes": ""},
        "tables": {"readings": [{"meter": f"M{i}", "value": i * 1.5} for i in range(10)]},
        "attachments": [],
    }
    pad = ENVELOPE_BYTES - len(json.dumps(body))
    body["record"]["notes"] = "x" * max(0, pad)
    return body


# --- the bare-handler floor (run as its own process) ---------------------------


def bare_server(port: int) -> None:
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True}, status=201)

    async def session(request: web.Request) -> web.Response:
        return web.json_response({"token": "bare"})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/api/v1/envelopes", handler)
    app.router.add_post("/api/v1/session", session)
    app.router.add_get("/healthz", health)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# --- the client (same code for both servers) -------------------------------------


async def _wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}")
            try:
                async with http.get(f"{url}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise SystemExit("server did not start")


async def drive(url: str, clients: int, seconds: float, warmup: float = 1.0) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.post(
            f"{url}/api/v1/session", json={"username": "bench", "password": "bench-password"}
        ) as resp:
            token = (await resp.json())["token"]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        latencies: list[float] = []
        warm = [0]
        errors = 0
        start = time.perf_counter()
        measure_from = start + warmup
        stop_at = measure_from + seconds

        async def client(i: int) -> None:
            nonlocal errors
            seq = 1
            while (now := time.perf_counter()) < stop_at:
                data = json.dumps(envelope(f"bench-{i}", seq))
                t0 = time.perf_counter()
                async with http.post(f"{url}/api/v1/envelopes", data=data, headers=headers) as r:
                    await r.read()
                    ok = r.status == 201
                t1 = time.perf_counter()
                if not ok:
                    errors += 1
                    continue
                seq += 1
                if now >= measure_from:
                    latencies.append(t1 - t0)
                else:
                    warm[0] += 1

        await asyncio.gather(*(client(i) for i in range(clients)))
    latencies.sort()
    n = len(latencies)
    return {
        "rate": n / seconds,
        "p50_ms": statistics.median(latencies) * 1000 if n else 0.0,
        "p99_ms": latencies[int(n * 0.99) - 1] * 1000 if n else 0.0,
        "count": n,
        "warmup_count": warm[0],
        "errors": errors,
    }


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_ms_per(pid: int, since: float, result: dict[str, float]) -> float:
    """Server CPU milliseconds per request over the whole run (warm-up included)."""
    total = result["count"] + result.get("warmup_count", 0)
    return (_cpu_s(pid) - since) * 1000 / total if total else 0.0


async def _commit_stats(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    values = {}
    for line in text.splitlines():
        if line.startswith(("outpost_store_commits ", "outpost_store_items ")):
            name, value = line.split()
            values[name] = float(value)
    commits = values.get("outpost_store_commits", 0.0)
    return {"per_commit": values.get("outpost_store_items", 0.0) / commits if commits else 0.0}


# --- the gateway ------------------------------------------------------------------


def seed_gateway(data_dir: Path, clients: int) -> None:
    from datetime import UTC, datetime

    from gateway.store import Store
    from gateway.store.activities import upsert_activity
    from gateway.store.users import replace_users
    from outpost.forms import FormDefinition
    from outpost.passwords import hash_password
    from outpost.wire.schemas import ActivityWire, UserPush, UserWire

    form = FormDefinition.model_validate(
        {
            "fields": [
                {"name": "site_ok", "type": "boolean", "required": True},
                {"name": "notes", "type": "text"},
            ],
            "tables": [
                {
                    "name": "readings",
                    "fields": [
                        {"name": "meter", "type": "text", "required": True},
                        {"name": "value", "type": "number"},
                    ],
                }
            ],
        }
    )
    now = datetime.now(UTC)
    store = Store(data_dir / "gateway.db").open()
    try:

        def work(conn: Any) -> None:
            replace_users(
                conn,
                UserPush(
                    gateway_id="bench",
                    users=[
                        UserWire(
                            username="bench",
                            password_hash=hash_password("bench-password"),
                            offline=True,
                        )
                    ],
                    offline_types=["inspection"],
                    pushed_at=now,
                ),
            )
            for i in range(clients):
                act = ActivityWire(
                    id=f"bench-{i}",
                    title=f"bench {i}",
                    type="inspection",
                    form=form,
                    form_version=1,
                    responsible="bench",
                    version=1,
                )
                upsert_activity(conn, act, "bench", now)

        store.write_sync(SqlWrite(work))
    finally:
        store.close()


def start(
    cmd: list[str], log: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTPOST_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra_env or {})
    with open(log, "ab") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=fh, env=env, cwd=ROOT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def slow_fsync_env(tmp_path: Path, fsync_ms: int) -> dict[str, str]:
    """LD_PRELOAD env that makes every fsync take ``fsync_ms`` longer (SD-card-like)."""
    if fsync_ms <= 0:
        return {}
    lib = tmp_path / "slow_fsync.so"
    src = Path(__file__).resolve().parent / "slow_fsync.c"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(lib), str(src), "-ldl"], check=True)
    return {"LD_PRELOAD": str(lib), "OUTPOST_BENCH_FSYNC_MS": str(fsync_ms)}


# --- raw SQLite floors -------------------------------------------------------------


def sqlite_floor(path: Path, synchronous: str, rows: int, per_commit: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS e (id TEXT PRIMARY KEY, activity_id TEXT, seq INT, body TEXT)"
    )
    bodies = [json.dumps(envelope("floor", i)) for i in range(rows)]
    t0 = time.perf_counter()
    for start_at in range(0, rows, per_commit):
        conn.execute("BEGIN IMMEDIATE")
        for i in range(start_at, min(rows, start_at + per_commit)):
            conn.execute(
                "INSERT INTO e VALUES (?, ?, ?, ?)", (str(uuid.uuid4()), "floor", i, bodies[i])
            )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return rows / elapsed


def floor_in_subprocess(
    path: Path, synchronous: str, rows: int, per_commit: int, env: dict[str, str]
) -> float:
    """The raw SQLite floor, in its own process (so LD_PRELOAD applies to it too)."""
    out = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--sqlite-floor",
            f"{path},{synchronous},{rows},{per_commit}",
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    return float(out.stdout.strip())


# --- main --------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="outpost-bench-", dir=args.dir) as tmp:
        tmp_path = Path(tmp)
        data_dir = tmp_path / "gw"
        await asyncio.get_running_loop().run_in_executor(None, seed_gateway, data_dir, args.clients)
        port = _free_port()
        cfg = tmp_path / "gateway.toml"
        cfg.write_text(
            f'[gateway]\nid = "bench"\ndata_dir = "{data_dir}"\n'
            f'[lan]\nhost = "127.0.0.1"\nport = {port}\ndisk_free_floor_mb = 0\n'
            f'[store]\nsynchronous = "{args.synchronous}"\n'
            "[mqtt]\nenabled = false\n[discovery]\nenabled = false\n"
        )
        url = f"http://127.0.0.1:{port}"
        slow = slow_fsync_env(tmp_path, args.fsync_ms)
        proc = start(
            [*GATEWAY_CMD, "--config", str(cfg), "--log-level", "WARNING"]
            if not os.environ.get("BENCH_PROFILE")
            else [sys.executable, os.environ["BENCH_PROFILE"], str(cfg)],
            tmp_path / "gateway.log",
            slow,
        )
        try:
            await _wait_healthy(url, proc)
            cpu0 = _cpu_s(proc.pid)
            gateway = await drive(url, args.clients, args.seconds)
            gateway["cpu_ms"] = _cpu_ms_per(proc.pid, cpu0, gateway)
            gateway.update(await _commit_stats(url))
        finally:
            stop(proc)
        conn = sqlite3.connect(data_dir / "gateway.db")
        stored = conn.execute("SELECT count(*) FROM envelopes").fetchone()[0]
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        conn.close()

        bare_port = _free_port()
        bare_url = f"http://127.0.0.1:{bare_port}"
        proc = start(
            [sys.executable, str(Path(__file__).resolve()), "--bare-server", str(bare_port)],
            tmp_path / "bare.log",
        )
        try:
            await _wait_healthy(bare_url, proc)
            cpu0 = _cpu_s(proc.pid)
            bare = await drive(bare_url, args.clients, args.seconds)
            bare["cpu_ms"] = _cpu_ms_per(proc.pid, cpu0, bare)
        finally:
            stop(proc)

        # One row per commit: fewer rows when fsync is slow (the rate is what counts).
        one_rows = args.floor_rows // 4 if not args.fsync_ms else max(100, 2000 // args.fsync_ms)
        one = floor_in_subprocess(tmp_path / "floor1.db", args.synchronous, one_rows, 1, slow)
        batched = floor_in_subprocess(
            tmp_path / "floorN.db", args.synchronous, args.floor_rows, args.clients, slow
        )
    return {
        "clients": args.clients,
        "seconds": args.seconds,
        "synchronous": args.synchronous,
        "fsync_ms": args.fsync_ms,
        "gateway": gateway,
        "bare": bare,
        "sqlite_one_per_commit": one,
        "sqlite_batched": batched,
        "stored": stored,
        "integrity": integrity,
    }


def report(r: dict[str, Any], markdown: bool) -> str:
    g, b = r["gateway"], r["bare"]
    rows = [
        (
            "gateway (HTTP + validate + group commit)",
            g["rate"],
            g["p50_ms"],
            g["p99_ms"],
            g["cpu_ms"],
        ),
        ("bare aiohttp handler (HTTP floor)", b["rate"], b["p50_ms"], b["p99_ms"], b["cpu_ms"]),
        ("raw SQLite, 1 row per commit", r["sqlite_one_per_commit"], None, None, None),
        (f"raw SQLite, {r['clients']} rows per commit", r["sqlite_batched"], None, None, None),
    ]
    ratios = [
        ("gateway / bare handler", g["rate"] / b["rate"] if b["rate"] else 0, ">= 0.5"),
        ("gateway / SQLite 1-per-commit", g["rate"] / r["sqlite_one_per_commit"], "> 5"),
        ("gateway p99 (ms)", g["p99_ms"], "< 50"),
    ]
    lines = []
    if markdown:
        lines.append("| path | envelopes/s | p50 ms | p99 ms | server CPU ms/req |")
        lines.append("| --- | ---: | ---: | ---: | ---: |")
        for name, rate, p50, p99, cpu in rows:
            lines.append(
                f"| {name} | {rate:,.0f} | {'' if p50 is None else f'{p50:.1f}'} | "
                f"{'' if p99 is None else f'{p99:.1f}'} | {'' if cpu is None else f'{cpu:.2f}'} |"
            )
        lines.append("")
        lines.append("| ratio | measured | aim |")
        lines.append("| --- | ---: | --- |")
        for name, value, aim in ratios:
            lines.append(f"| {name} | {value:.2f} | {aim} |")
    else:
        for name, rate, p50, p99, cpu in rows:
            lat = (
                ""
                if p50 is None
                else f"  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  CPU {cpu:.2f} ms/req"
            )
            lines.append(f"{name:45s} {rate:9,.0f} /s{lat}")
        for name, value, aim in ratios:
            lines.append(f"{name:45s} {value:9.2f}    (aim {aim})")
    lines.append(
        f"\n{r['clients']} clients, {r['seconds']} s, 2 KiB envelopes, synchronous={r['synchronous']}, "
        f"fsync +{r['fsync_ms']} ms, "
        f"stored {r['stored']} envelopes, integrity_check {r['integrity']}, "
        f"errors gateway={g['errors']} bare={b['errors']}, "
        f"{g.get('per_commit', 0):.1f} writes per group commit"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "EXTRA"])
    parser.add_argument("--floor-rows", type=int, default=20_000)
    parser.add_argument("--dir", default=None, help="temp dir (same disk as the data_dir)")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--fsync-ms",
        type=int,
        default=0,
        help="add this many ms to every fsync (LD_PRELOAD shim): an SD-card-like disk",
    )
    parser.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sqlite-floor", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        bare_server(args.bare_server)
        return
    if args.sqlite_floor:
        path, synchronous, rows, per_commit = args.sqlite_floor.split(",")
        print(sqlite_floor(Path(path), synchronous, int(rows), int(per_commit)))
        return
    result = asyncio.run(main_async(args))
    print(json.dumps(result, indent=2) if args.json else report(result, args.markdown))


if __name__ == "__main__":
    main()
