"""Benchmark: replication lag under sustained ingest, and data-disk bytes per envelope.

Not a test. Runs a real gateway process (``python -m gateway run``, no MQTT,
no mDNS) with ``[replication]`` on, its replica on a separate filesystem
(``/dev/shm`` by default, so the kernel's per-process ``write_bytes`` count
only the data disk), and HTTP clients posting 2 KiB envelopes at a fixed
rate (or flat out with ``--rate 0``). Then the same without replication.

Measured, not guessed:

- replication lag per envelope: from its 201 to the first moment the
  replica holds an LTX file stamped after it (the bench polls the replica
  directory every 20 ms); p50 / p99 / max;
- what ``/api/v1/status`` showed as ``replication.lag_s`` meanwhile;
- bytes written to the data disk per envelope (``/proc/<pid>/io``
  ``write_bytes`` of the gateway and of litestream, counted when pages are
  dirtied) with and without replication; bytes on the replica per envelope;
- the largest ``gateway.db-wal`` seen (is the WAL bounded?), and the 201
  latency with and without litestream next to the writer.

    .venv/bin/python bench/replication_lag.py [--rate 300] [--seconds 30] [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gateway_ingest import (  # noqa: E402
    GATEWAY_CMD,
    _cpu_s,
    _free_port,
    _wait_healthy,
    envelope,
    seed_gateway,
    start,
    stop,
)

from gateway.replication.lag import file_replica_position  # noqa: E402


def write_bytes(pid: int | None) -> int:
    if pid is None:
        return 0
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except FileNotFoundError:
        return 0
    return 0


def tree_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += (Path(root) / name).stat().st_size
    return total


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(len(values) * q) - 1))]


async def ingest(
    url: str, clients: int, rate: float, seconds: float, acks: list[float], lat: list[float]
) -> int:
    """Post envelopes from ``clients`` loops, ``rate``/s in total (0: flat out)."""
    connector = aiohttp.TCPConnector(limit=clients)
    errors = 0
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.post(
            f"{url}/api/v1/session", json={"username": "bench", "password": "bench-password"}
        ) as resp:
            token = (await resp.json())["token"]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        stop_at = time.monotonic() + seconds
        interval = clients / rate if rate > 0 else 0.0

        async def client(i: int) -> None:
            nonlocal errors
            seq = 1
            next_at = time.monotonic() + (interval * i / clients)
            while time.monotonic() < stop_at:
                if interval:
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    next_at += interval
                data = json.dumps(envelope(f"bench-{i}", seq))
                t0 = time.perf_counter()
                async with http.post(f"{url}/api/v1/envelopes", data=data, headers=headers) as r:
                    await r.read()
                    ok = r.status == 201
                if not ok:
                    errors += 1
                    continue
                acks.append(time.time())
                lat.append(time.perf_counter() - t0)
                seq += 1

        await asyncio.gather(*(client(i) for i in range(clients)))
    return errors


async def sample_replica(
    replica: Path, samples: list[tuple[float, float]], done: asyncio.Event
) -> None:
    loop = asyncio.get_running_loop()
    while not done.is_set():
        pos = await loop.run_in_executor(None, file_replica_position, replica)
        samples.append((time.time(), pos.timestamp))
        await asyncio.sleep(0.02)


async def sample_status(
    url: str, lags: list[float], wal: list[int], db: Path, done: asyncio.Event
) -> None:
    async with aiohttp.ClientSession() as http:
        while not done.is_set():
            async with http.get(f"{url}/api/v1/status", headers=await auth(url)) as resp:
                data = await resp.json()
            lag = data.get("replication", {}).get("lag_s")
            if lag is not None:
                lags.append(float(lag))
            with contextlib.suppress(FileNotFoundError):
                wal.append(Path(f"{db}-wal").stat().st_size)
            await asyncio.sleep(0.25)


_TOKENS: dict[str, dict[str, str]] = {}


async def auth(url: str) -> dict[str, str]:
    if url not in _TOKENS:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{url}/api/v1/session", json={"username": "bench", "password": "bench-password"}
            ) as resp,
        ):
            _TOKENS[url] = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    return _TOKENS[url]


async def status_of(url: str) -> dict[str, Any]:
    headers = await auth(url)
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}/api/v1/status", headers=headers) as resp,
    ):
        data: dict[str, Any] = await resp.json()
        return data


def lag_per_envelope(acks: list[float], samples: list[tuple[float, float]]) -> list[float]:
    """For each ack, the first sample time whose replica stamp is at or after it, minus the ack."""
    lags = []
    j = 0
    for ack in sorted(acks):
        while j < len(samples) and samples[j][1] < ack:
            j += 1
        if j == len(samples):
            break  # never replicated within the run (counted as missing)
        lags.append(samples[j][0] - ack)
    return lags


async def run_once(args: argparse.Namespace, replicate: bool) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="outpost-repl-bench-", dir=args.dir) as tmp,
        tempfile.TemporaryDirectory(prefix="outpost-replica-", dir=args.replica_dir) as rtmp,
    ):
        tmp_path = Path(tmp)
        data_dir = tmp_path / "gw"
        replica = Path(rtmp) / "replica"
        await asyncio.get_running_loop().run_in_executor(None, seed_gateway, data_dir, args.clients)
        port = _free_port()
        cfg = tmp_path / "gateway.toml"
        cfg.write_text(
            f'[gateway]\nid = "bench"\ndata_dir = "{data_dir}"\n'
            f'[lan]\nhost = "127.0.0.1"\nport = {port}\ndisk_free_floor_mb = 0\n'
            "[mqtt]\nenabled = false\n[discovery]\nenabled = false\n"
            + (f'[replication]\nenabled = true\npath = "{replica}"\n' if replicate else "")
        )
        url = f"http://127.0.0.1:{port}"
        proc = start(
            [*GATEWAY_CMD, "--config", str(cfg), "--log-level", "WARNING"], tmp_path / "gw.log"
        )
        acks: list[float] = []
        latencies: list[float] = []
        samples: list[tuple[float, float]] = []
        shown: list[float] = []
        wal: list[int] = []
        try:
            await _wait_healthy(url, proc)
            ls_pid = None
            if replicate:
                deadline = time.monotonic() + 20
                while ls_pid is None and time.monotonic() < deadline:
                    ls_pid = (await status_of(url))["replication"].get("pid")
                    await asyncio.sleep(0.1)
                # settle: the initial snapshot is not part of the steady state
                while (await status_of(url))["replication"].get("lag_s") != 0.0:
                    await asyncio.sleep(0.1)
            db_bytes0 = tree_bytes(data_dir)
            replica0 = tree_bytes(replica) if replicate else 0
            gw_w0, ls_w0 = write_bytes(proc.pid), write_bytes(ls_pid)
            gw_c0, ls_c0 = _cpu_s(proc.pid), (_cpu_s(ls_pid) if ls_pid else 0.0)
            done = asyncio.Event()
            side = [
                asyncio.create_task(sample_status(url, shown, wal, data_dir / "gateway.db", done))
            ]
            if replicate:
                side.append(asyncio.create_task(sample_replica(replica, samples, done)))
            errors = await ingest(url, args.clients, args.rate, args.seconds, acks, latencies)
            if replicate:  # let the tail reach the replica (bounded)
                deadline = time.monotonic() + 10
                while samples and samples[-1][1] < max(acks) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
            done.set()
            await asyncio.gather(*side)
            gw_w = write_bytes(proc.pid) - gw_w0
            ls_w = write_bytes(ls_pid) - ls_w0
            gw_cpu = _cpu_s(proc.pid) - gw_c0
            ls_cpu = (_cpu_s(ls_pid) - ls_c0) if ls_pid else 0.0
            final = await status_of(url)
            replica_bytes = (tree_bytes(replica) - replica0) if replicate else 0
            data_growth = tree_bytes(data_dir) - db_bytes0
        finally:
            stop(proc)
    n = len(acks)
    lags = lag_per_envelope(acks, samples) if replicate else []
    return {
        "replicate": replicate,
        "envelopes": n,
        "rate": n / args.seconds,
        "errors": errors,
        "ack_p50_ms": statistics.median(latencies) * 1000 if latencies else 0.0,
        "ack_p99_ms": pct(latencies, 0.99) * 1000,
        "lag_p50_s": pct(lags, 0.50),
        "lag_p99_s": pct(lags, 0.99),
        "lag_max_s": max(lags) if lags else float("nan"),
        "not_replicated": n - len(lags) if replicate else 0,
        "shown_lag_p50_s": pct(shown, 0.50),
        "shown_lag_p99_s": pct(shown, 0.99),
        "shown_lag_max_s": max(shown) if shown else float("nan"),
        "gateway_bytes_per_env": gw_w / n if n else 0.0,
        "litestream_bytes_per_env": ls_w / n if n else 0.0,
        "replica_bytes_per_env": replica_bytes / n if n else 0.0,
        "data_dir_growth_per_env": data_growth / n if n else 0.0,
        "wal_max_mb": max(wal) / 1e6 if wal else 0.0,
        "gateway_cpu_ms_per_env": gw_cpu * 1000 / n if n else 0.0,
        "litestream_cpu_ms_per_env": ls_cpu * 1000 / n if n else 0.0,
        "restarts": final.get("replication", {}).get("restarts", 0),
    }


def report(rows: list[dict[str, Any]], args: argparse.Namespace, markdown: bool) -> str:
    on = next(r for r in rows if r["replicate"])
    off = next(r for r in rows if not r["replicate"])
    lines = []
    rate = "flat out" if args.rate == 0 else f"{args.rate:.0f}/s target"
    head = (
        f"{args.clients} clients, {rate}, {args.seconds:.0f} s, 2 KiB envelopes, "
        f"replica on {args.replica_dir}, monitor/sync interval 200 ms"
    )
    if markdown:
        lines += [
            head,
            "",
            "| measure | with replication | without |",
            "| --- | ---: | ---: |",
            f"| envelopes acknowledged (rate) | {on['envelopes']} ({on['rate']:.0f}/s) | {off['envelopes']} ({off['rate']:.0f}/s) |",
            f"| 201 latency p50 / p99 ms | {on['ack_p50_ms']:.1f} / {on['ack_p99_ms']:.1f} | {off['ack_p50_ms']:.1f} / {off['ack_p99_ms']:.1f} |",
            f"| replication lag p50 / p99 / max s (measured at the replica) | {on['lag_p50_s']:.3f} / {on['lag_p99_s']:.3f} / {on['lag_max_s']:.3f} | |",
            f"| lag shown in /api/v1/status p50 / p99 / max s | {on['shown_lag_p50_s']:.3f} / {on['shown_lag_p99_s']:.3f} / {on['shown_lag_max_s']:.3f} | |",
            f"| envelopes not on the replica 10 s after the run | {on['not_replicated']} | |",
            f"| data-disk bytes/envelope: gateway process | {on['gateway_bytes_per_env']:,.0f} | {off['gateway_bytes_per_env']:,.0f} |",
            f"| data-disk bytes/envelope: litestream | {on['litestream_bytes_per_env']:,.0f} | |",
            f"| data-disk bytes/envelope: total | {on['gateway_bytes_per_env'] + on['litestream_bytes_per_env']:,.0f} | {off['gateway_bytes_per_env']:,.0f} |",
            f"| replica bytes/envelope | {on['replica_bytes_per_env']:,.0f} | |",
            f"| CPU ms/envelope: gateway / litestream | {on['gateway_cpu_ms_per_env']:.2f} / {on['litestream_cpu_ms_per_env']:.2f} | {off['gateway_cpu_ms_per_env']:.2f} / |",
            f"| largest WAL seen (MB) | {on['wal_max_mb']:.1f} | {off['wal_max_mb']:.1f} |",
            f"| litestream restarts | {on['restarts']} | |",
        ]
    else:
        lines.append(head)
        for r in rows:
            lines.append(json.dumps(r, indent=1))
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    return [await run_once(args, True), await run_once(args, False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument(
        "--rate", type=float, default=300.0, help="envelopes/s in total; 0 = flat out"
    )
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--dir", default=None, help="data directory parent (the 'SD card')")
    parser.add_argument("--replica-dir", default="/dev/shm", help="replica parent (the 'USB disk')")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    rows = asyncio.run(main_async(args))
    print(report(rows, args, args.markdown))


if __name__ == "__main__":
    main()
