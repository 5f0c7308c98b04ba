"""The admin API while replay is saturated: GET /api/v1/gateways and dispatch latency.

    .venv/bin/python bench/admin_latency.py [--gateways 300] [--seconds 20] [--repeat 3]

A real ``outpost-bridge run`` process on PostgreSQL and a real Mosquitto. In
one child process ``--gateways`` MQTT clients each keep a batch of 2
envelopes in flight (the next one as soon as the last is answered), more
than one bridge worker commits, so replay is saturated and its queue full.
This process meanwhile times ``GET /api/v1/gateways`` and ``POST
/api/v1/activities/{id}/dispatch`` one after the other, first with the
uplink idle, then saturated, and prints p50/p99 of each against the idle
figure, with the bridge's applied/s and queue delay from its /metrics; once
with Python's thread switch interval (5 ms) and once with the bridge's
``[replay] switch_interval_ms`` (1 ms), alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.central_ingest import FORM, make_envelopes, postgres_database
from cloud_bridge import rules
from cloud_bridge.db import Database
from cloud_bridge.migration import migrate
from outpost.forms import ActivityTypeDef
from outpost.mqtt import MqttClient, Received
from outpost.mqtt_config import MqttSection
from outpost.wire import topics
from outpost.wire.codec import decode, encode
from outpost.wire.schemas import EnvelopeBatch, EnvelopeResults
from tests.support.bridge_process import BridgeProcess
from tests.support.broker import Broker


def seed(url: str, gateways: int, dispatches: int) -> None:
    db = Database.from_url(url)
    try:
        migrate(db.engine)
        sites = [f"gw-{g}" for g in range(gateways)] + ["site-admin"]  # at most 1,000
        with db.session() as s:
            rules.put_user(s, "ana", "pw-ana-bench", True, sites=sites)
            rules.put_activity_type(
                s,
                ActivityTypeDef.model_validate(
                    {"name": "inspection", "offline": True, "form": FORM}
                ),
            )
            for g in range(gateways):
                rules.approve(
                    s, rules.create_activity(s, "b", "inspection", "ana", f"a{g}").id, "ana"
                )
            for d in range(dispatches):
                rules.approve(
                    s, rules.create_activity(s, "d", "inspection", "ana", f"d{d}").id, "ana"
                )
        with db.session() as s:
            for g in range(gateways):
                rules.check_out(s, f"a{g}", f"gw-{g}")
    finally:
        db.dispose()


def load(port: int, gateways: int, stop: Any) -> None:
    """Child process: every gateway keeps one batch of 2 in flight until ``stop`` is set."""

    async def gateway(g: int) -> None:
        gid = f"gw-{g}"
        answered: asyncio.Queue[None] = asyncio.Queue()

        async def on_message(msg: Received) -> None:
            if isinstance(decode(msg.payload), EnvelopeResults):
                answered.put_nowait(None)

        client = MqttClient(
            MqttSection(host="127.0.0.1", port=port),
            client_id=f"bench-{gid}",
            on_message=on_message,
            subscriptions=[(topics.topic(gid, "down/#"), 1)],
        )
        await client.async_start()
        await client.async_wait_connected(30)
        (template,) = make_envelopes(1, gid, f"a{g}")
        seq = 0
        try:
            while not stop.is_set():
                batch = []
                for _ in range(2):
                    seq += 1
                    batch.append(
                        template.model_copy(
                            update={"envelope_id": uuid.uuid4(), "activity_id": f"a{g}", "seq": seq}
                        )
                    )
                doc = EnvelopeBatch(
                    gateway_id=gid,
                    batch_id=uuid.uuid4(),
                    sent_at=datetime.now(UTC),
                    envelopes=batch,
                )
                await client.async_publish(
                    topics.topic(gid, topics.UP_ENVELOPES), encode(doc), qos=1
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(answered.get(), 30)
        finally:
            await client.async_stop()

    async def main() -> None:
        await asyncio.gather(*(gateway(g) for g in range(gateways)))

    asyncio.run(main())


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def measure(bridge: BridgeProcess, seconds: float, first_dispatch: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"gateways": [], "dispatch": []}
    deadline = time.monotonic() + seconds
    d = first_dispatch
    while time.monotonic() < deadline:
        t = time.perf_counter()
        bridge.ok("GET", "/api/v1/gateways")
        out["gateways"].append(time.perf_counter() - t)
        t = time.perf_counter()
        bridge.ok("POST", f"/api/v1/activities/d{d}/dispatch", {"gateway_id": "site-admin"})
        out["dispatch"].append(time.perf_counter() - t)
        d += 1
        time.sleep(0.05)  # an operator's pace, not a flood
    return out


def applied(bridge: BridgeProcess) -> tuple[float, float, float]:
    """(envelopes applied, queue delay sum, queue delay count) from the bridge's /metrics."""
    import urllib.request

    req = urllib.request.Request(
        bridge.url + "/metrics", headers={"Authorization": f"Bearer {bridge.token}"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read().decode()
    values = {"applied": 0.0, "sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        if line.startswith('outpost_bridge_envelope_results_total{outcome="applied"}'):
            values["applied"] = float(line.split()[-1])
        elif line.startswith("outpost_bridge_replay_queue_delay_seconds_sum"):
            values["sum"] = float(line.split()[-1])
        elif line.startswith("outpost_bridge_replay_queue_delay_seconds_count"):
            values["count"] = float(line.split()[-1])
    return values["applied"], values["sum"], values["count"]


def histograms(bridge: BridgeProcess) -> dict[str, dict[str, float]]:
    return bridge_histograms(bridge.url, bridge.token)


def bridge_histograms(url: str, token: str) -> dict[str, dict[str, float]]:
    """Cumulative buckets, sum and count of the loop-lag and publish histograms."""
    import urllib.request

    req = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read().decode()
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        for name, key in (
            ("outpost_bridge_loop_lag_seconds", "loop_lag"),
            ('outpost_bridge_publish_seconds{leaf="down/dispatch"', "dispatch_puback"),
            ('outpost_bridge_publish_seconds{leaf="down/results"', "results_puback"),
            ("outpost_bridge_heartbeat_group_size", "heartbeat_groups"),
            ("outpost_bridge_replay_group_batches", "replay_groups"),
        ):
            base = name.split("{")[0]
            if not line.startswith(base) or (("{" in name) and name.split("{")[1] not in line):
                continue
            h = out.setdefault(key, {})
            value = float(line.split()[-1])
            if "_bucket" in line:
                le = line.split('le="')[1].split('"')[0]
                h[le] = value
            elif line.startswith(base + "_sum"):
                h["sum"] = value
            elif line.startswith(base + "_count"):
                h["count"] = value
    return out


def between(a: dict[str, float], b: dict[str, float], unit: str = "ms") -> str:
    """Mean and the bucket bound holding the 99th percentile of what was observed from a to b
    (``unit`` "ms" for seconds shown in ms, "" for a count)."""
    n = b.get("count", 0) - a.get("count", 0)
    if n <= 0:
        return "none"
    mean = (b.get("sum", 0) - a.get("sum", 0)) / n
    if not unit:
        return f"mean {mean:.1f} ({n:.0f})"
    p99 = "inf"
    for le in sorted((k for k in b if k not in ("sum", "count", "+Inf")), key=float):
        if b[le] - a.get(le, 0) >= 0.99 * n:
            p99 = f"<= {float(le) * 1000:g} ms"
            break
    return f"mean {mean * 1000:.1f} ms, p99 {p99} ({n:.0f})"


def run(url: str, tmp: Path, gateways: int, seconds: float, rep: int, switch_ms: float) -> None:
    dispatches = int(seconds * 40)  # more than one operator can send in that time
    seed(url, gateways, dispatches)
    broker = Broker(tmp / f"broker-{rep}-{switch_ms}")
    broker.start()
    bridge = BridgeProcess(
        tmp / f"bridge-{rep}-{switch_ms}", broker, url, replay={"switch_interval_ms": switch_ms}
    )
    bridge.start()
    stop = multiprocessing.Event()
    child = multiprocessing.Process(target=load, args=(broker.port, gateways, stop))
    try:
        h0 = histograms(bridge)
        idle = measure(bridge, seconds / 2, 0)
        h1 = histograms(bridge)
        child.start()
        time.sleep(5)  # the fleet connects and the queue fills
        a0, s0, c0 = applied(bridge)
        h2 = histograms(bridge)
        t0 = time.monotonic()
        busy = measure(bridge, seconds, len(idle["dispatch"]))
        a1, s1, c1 = applied(bridge)
        h3 = histograms(bridge)
        rate = (a1 - a0) / (time.monotonic() - t0)
        delay = (s1 - s0) / max(1.0, c1 - c0)
    finally:
        stop.set()
        child.join(60)
        if child.is_alive():
            child.kill()
        bridge.stop()
        broker.stop()
    load1 = os.getloadavg()[0]
    print(
        f"run {rep}, switch interval {switch_ms or 5} ms (load {load1:.1f}), "
        f"{gateways} gateways saturating replay at "
        f"{rate:,.0f} envelopes/s, mean queue delay {delay * 1000:.0f} ms:",
        flush=True,
    )
    for name in ("gateways", "dispatch"):
        i, b = idle[name], busy[name]
        print(
            f"  {name:9s} idle p50 {percentile(i, 0.5) * 1000:6.1f} ms p99 "
            f"{percentile(i, 0.99) * 1000:6.1f} ms ({len(i)} calls) | saturated p50 "
            f"{percentile(b, 0.5) * 1000:6.1f} ms p99 {percentile(b, 0.99) * 1000:6.1f} ms "
            f"({len(b)} calls)",
            flush=True,
        )
    for key in ("loop_lag", "dispatch_puback", "results_puback"):
        print(
            f"  {key:15s} idle {between(h0.get(key, {}), h1.get(key, {}))} | saturated "
            f"{between(h2.get(key, {}), h3.get(key, {}))}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--switch-ms",
        default="0,1",
        help="[replay] switch_interval_ms values to compare (0: Python's 5 ms)",
    )
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "OUTPOST_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(1, args.repeat + 1):
            for switch_ms in (float(v) for v in args.switch_ms.split(",")):
                with postgres_database(args.pg) as url:
                    if url is None:
                        raise SystemExit("no PostgreSQL server")
                    run(url, Path(tmp), args.gateways, args.seconds, rep, switch_ms)


if __name__ == "__main__":
    main()
