"""Gateway sign-in under a burst: peak memory of 40 concurrent sign-ins, before and after.

Starts a real ``outpost-gateway run`` process (LAN only) with N offline users
whose hashes are argon2's defaults (64 MiB per check, as central makes them),
signs them all in at once, and reads the process's peak RSS (``VmHWM``)
against its RSS at rest. The physical figure it is held to, measured in the
same run: one argon2 check's own memory (its ``memory_cost``) times the
number allowed at once (``lan.signin_concurrency``); the ratio says how much
of the growth the bound explains.

``--source DIR`` runs the gateway from another checkout (e.g. a worktree of
the commit before the bound, for the "before" figure); keys that checkout
does not know are left out of its config.

    .venv/bin/python bench/gateway_signin.py [--n 40] [--repeat 3] [--source DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
from argon2 import PasswordHasher

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.broker import free_port  # noqa: E402

PASSWORD = "bench sign-in password"


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _seed(source: Path, config: Path, n: int, password_hash: str) -> None:
    code = f"""
import sys
sys.path.insert(0, {str(source)!r})
from datetime import UTC, datetime
from gateway.app import store_for
from gateway.config import load
from gateway.store.users import ReplaceUsers
from outpost.wire.schemas import UserPush, UserWire
store = store_for(load({str(config)!r})).open()
push = UserPush(gateway_id="site-bench", offline_types=[], pushed_at=datetime.now(UTC),
    users=[UserWire(username=f"u{{i}}", password_hash={password_hash!r}, offline=True)
           for i in range({n})])
store.write_sync(ReplaceUsers(push))
store.close()
"""
    subprocess.run([sys.executable, "-c", code], check=True, env=_env(source))


def _env(source: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(source), "OUTPOST_LOG_LEVEL": "warning"}


async def _burst(url: str, n: int) -> tuple[list[int], float]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:

        async def one(i: int) -> int:
            async with http.post(
                f"{url}/api/v1/session", json={"username": f"u{i}", "password": PASSWORD}
            ) as r:
                return r.status

        t0 = time.perf_counter()
        statuses = await asyncio.gather(*(one(i) for i in range(n)))
        return list(statuses), time.perf_counter() - t0


def run_once(
    source: Path, n: int, bounded: bool, password_hash: str, concurrency: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        config = Path(tmp) / "gateway.toml"
        lan = f'host = "127.0.0.1"\nport = {port}\ndisk_free_floor_mb = 0\nsignin_slowdown_s = 0\n'
        lan += "signin_max_failures = 100000\n"
        if bounded:
            # All wait their turn (none refused), so every one is a check.
            lan += f"signin_concurrency = {concurrency}\nsignin_queue = 64\nsignin_wait_s = 60\n"
        config.write_text(
            f'[gateway]\nid = "site-bench"\ndata_dir = "{tmp}/data"\n[lan]\n{lan}'
            "[discovery]\nenabled = false\n[mqtt]\nenabled = false\n"
        )
        _seed(source, config, n, password_hash)
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(config)],
            env=_env(source),
            cwd=source,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("gateway did not start") from None
                    time.sleep(0.05)
            rest_kib = _status_kib(proc.pid, "VmRSS")
            statuses, wall = asyncio.run(_burst(url, n))
            peak_kib = _status_kib(proc.pid, "VmHWM")
        finally:
            proc.terminate()
            proc.wait(30)
    return {
        "rest_mib": rest_kib / 1024,
        "peak_mib": peak_kib / 1024,
        "growth_mib": (peak_kib - rest_kib) / 1024,
        "ok": statuses.count(200),
        "busy": statuses.count(503),
        "other": len(statuses) - statuses.count(200) - statuses.count(503),
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--source", type=Path, default=ROOT)
    parser.add_argument("--concurrency", type=int, default=2, help="lan.signin_concurrency")
    args = parser.parse_args()
    hasher = PasswordHasher()  # the cost central uses
    password_hash = hasher.hash(PASSWORD)
    per_hash_mib = hasher.memory_cost / 1024
    bounded = (args.source / "outpost" / "passwords.py").exists()
    limit = per_hash_mib * (args.concurrency if bounded else args.n)
    runs = [
        run_once(args.source, args.n, bounded, password_hash, args.concurrency)
        for _ in range(args.repeat)
    ]
    growth = [r["growth_mib"] for r in runs]
    print(
        json.dumps(
            {
                "source": str(args.source),
                "bounded": bounded,
                "n": args.n,
                "argon2_memory_mib": per_hash_mib,
                "limit_mib": limit,
                "runs": runs,
                "growth_median_mib": statistics.median(growth),
                "growth_spread_mib": [min(growth), max(growth)],
                "growth_over_limit": statistics.median(growth) / limit,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
