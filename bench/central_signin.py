"""Central sign-in under a burst: latency and memory of 40 concurrent sign-ins.

Starts a bridge in this process (SQLite, a real broker), makes 40 people, and
signs them all in at once through POST /api/v1/session. Prints the latencies,
the process's peak RSS growth, and the ratio of the burst's wall time to the
floor set by argon2 itself (40 hashes / password_slots x one hash, measured
in the same run).

    .venv/bin/python bench/central_signin.py [--n 40] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cloud_bridge.service import Bridge
from outpost.passwords import hash_password, verify_password
from tests.cloud_bridge.conftest import TOKEN, bridge_config
from tests.support.broker import Broker

PASSWORD = "bench sign-in password"


def rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run(n: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "broker").start()
        cfg = bridge_config(f"sqlite:///{tmp}/central.db", Path(tmp) / "central", broker.port)
        bridge = Bridge(cfg)
        await bridge.async_start()
        try:
            async with aiohttp.ClientSession() as http:
                auth = {"Authorization": f"Bearer {TOKEN}"}
                for i in range(n):
                    async with http.put(
                        f"{bridge.admin_url}/api/v1/users/u{i}",
                        json={"password": PASSWORD, "role": "crew"},
                        headers=auth,
                    ) as r:
                        assert r.status == 201
                h = hash_password(PASSWORD)
                t0 = time.perf_counter()
                for _ in range(5):
                    verify_password(h, PASSWORD)
                one = (time.perf_counter() - t0) / 5
                slots = cfg.platform.password_slots
                before = rss_peak_mib()
                for round_ in range(repeat):
                    statuses: list[int] = []

                    async def sign_in(i: int, statuses: list[int] = statuses) -> float:
                        t = time.perf_counter()
                        async with http.post(
                            f"{bridge.admin_url}/api/v1/session",
                            json={"username": f"u{i}", "password": PASSWORD},
                        ) as r:
                            statuses.append(r.status)  # 201, or 503 busy past password_wait_s
                        return time.perf_counter() - t

                    start = time.perf_counter()
                    lat = sorted(await asyncio.gather(*(sign_in(i) for i in range(n))))
                    print(f"  statuses: 201 x{statuses.count(201)}, 503 x{statuses.count(503)}")
                    wall = time.perf_counter() - start
                    floor = n / slots * one
                    print(
                        f"round {round_ + 1}: {n} sign-ins in {wall:.2f} s "
                        f"(floor {floor:.2f} s = {n}/{slots} slots x {one * 1000:.0f} ms argon2; "
                        f"ratio {wall / floor:.2f}x); latency p50 {statistics.median(lat) * 1000:.0f} ms, "
                        f"p95 {lat[int(0.95 * (n - 1))] * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms; "
                        f"peak RSS {rss_peak_mib():.0f} MiB (+{rss_peak_mib() - before:.0f} MiB over "
                        f"the start of the bursts; {slots} x 64 MiB argon2 = {slots * 64} MiB bound)"
                    )
        finally:
            await bridge.async_stop()
            broker.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    asyncio.run(run(a.n, a.repeat))


if __name__ == "__main__":
    main()
