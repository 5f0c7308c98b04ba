"""Fleet scale: many simulated gateways against Mosquitto, bridge worker(s) and PostgreSQL.

    .venv/bin/python bench/fleet_scale.py --gateways 200 --workers 1 [--duration 60]
    .venv/bin/python bench/fleet_scale.py --gateways 200 --outage --backlog 100
    .venv/bin/python bench/fleet_scale.py --gateways 300 --saturate [--workers 2]
    .venv/bin/python bench/fleet_scale.py --gateways 2000 --queued [--queued-batches 4] [--sim-idle]

Each simulated gateway is a real MQTT 5 session with its own client id
(``outpost.mqtt.MqttClient``, the client the gateway runs; persistent
session, a last will) speaking the wire contract from ``outpost.wire``: a
retained ``state`` online, a heartbeat (QoS 0) every 30 s, and every 10 s a
batch of 2 envelopes for the activity checked out to it (QoS 1). It waits
for central's answer on ``down/results``; a ``BatchDeferred`` is honoured
(held ``retry_after_s`` with jitter, then sent again), and a batch
unanswered for ``--ack-timeout`` is sent again (counted as a resend).

The run starts its own Mosquitto, a fresh PostgreSQL database and ``W``
``outpost-bridge`` processes (``[mqtt] shared`` when W > 1). It seeds the
database with ``--known`` gateways (10,000 by default; the simulated ones
among them) so the fleet API is measured at that size, then prints:

- offered and applied envelopes/s, publish → answer p50/p99 (steady window);
- each bridge's CPU (% of one core) and peak RSS;
- ``GET /api/v1/gateways?limit=50``, ``GET /api/v1/fleet/summary`` and the
  ``/fleet`` page (signed in) p50/p99 while the fleet runs;
- in the same run, the physical limits for the ratio: raw PostgreSQL INSERT
  rate (one row per commit, and 100 rows per commit) and raw broker
  throughput (QoS 1, the batch's payload size, paho to paho);
- the correctness check: every envelope applied exactly once (the ledger),
  every batch answered.

``--saturate``: every gateway keeps a batch of 2 in flight instead (the next
as soon as the last is answered), so the applied rate is the small-batch
ceiling; printed against the bulk rate measured at the start of the same run
(``small_to_bulk``): the median of ``--bulk-rounds`` (5) rounds of
``--bulk-envelopes`` (4,000) envelopes from one gateway in batches of 200,
each round's rate and the ratio against the fastest and slowest round printed
beside it. A bulk round keeps ``--bulk-window`` (8) batches in flight, as
the gateway's own drain does (``[mqtt] inflight_batches``); until 2026-12-04
it kept one, waiting on each answer, which measured the worker's latency as
much as its work (17-33 % fewer envelopes/s).

``--pin``: each uplink worker gets a core of its own (and every one of its
threads), the simulator, its raw-limit probes and Mosquitto the cores left;
PostgreSQL is the machine's and floats. Both the small batches and the bulk
rounds then run on the same split, so their ratio is the worker's, not the
ratio of what a shared machine left it.

``--queued``: the small-batch ceiling of the worker alone. Once every
gateway is connected and its "online" state applied, the uplink worker(s)
are paused (SIGSTOP, well inside their 30 s keepalive), each gateway
publishes ``--queued-batches`` (1) batches of 2 and the broker holds them;
then the workers go on and drain the queue while the simulator only takes
the answers and sends the fleet's heartbeats on their 30 s beat. The drain's
rate is printed against the bulk rounds of the same run, as with
``--saturate``. With ``--saturate`` the simulator makes every batch while
the worker applies it, on the same two cores; here it made them before.
With ``--sim-idle`` the simulator does nothing at all while the worker
drains (its event loop is held; the answers wait in its sockets and at the
broker, and are checked after), the heartbeats a drain at half the bulk rate
would see are queued with the batches, and the drain ends when the ledger
holds every queued envelope: taking the fleet's answers cost the simulator
~40 % of a core here, on the cores the worker and PostgreSQL share.

``--outage``: every gateway holds ``--backlog`` envelopes when the run
starts and all connect at once (a regional outage ending); prints the time
to drain, the resends and the deferrals. ``--bridge-src DIR`` runs the
bridge from another checkout (``git archive <rev> | tar -x -C DIR``) to
compare before/after a change with the same simulator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.admin_latency import between, bridge_histograms  # noqa: E402
from bench.central_ingest import postgres_database  # noqa: E402
from bench.peers import ADMIN_TOKEN, raw_transfer  # noqa: E402
from cloud_bridge.db import Database  # noqa: E402
from cloud_bridge.models import Gateway, LedgerEntry  # noqa: E402
from outpost.wire import topics  # noqa: E402
from outpost.wire.codec import encode  # noqa: E402
from outpost.wire.schemas import EnvelopeBatch  # noqa: E402
from tests.support.broker import Broker, free_port, wait_port  # noqa: E402
from tests.support.fleet_sim import (  # noqa: E402
    BATCH_S,
    HEARTBEAT_S,
    PER_BATCH,
    PROBE_SITE,
    VIEWER_PASSWORD,
    SimGateway,
    Stats,
    authors,
    envelope,
    now,
    seed,
)

PROBES = 600  # activities to dispatch, one a second at most, while the fleet runs
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


# --- the physical limits, measured in the same run ---------------------------------------


def raw_postgres(url: str, seconds: float = 3.0) -> dict[str, float]:
    """INSERTs/s into a scratch table: one row per commit, and 100 rows per commit."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    conn = psycopg.connect(
        host=u.host, port=u.port or 5432, user=u.username, dbname=u.database, autocommit=True
    )
    row = json.dumps({"notes": "x" * 400})
    with conn:
        conn.execute("CREATE TABLE bench_raw (id bigserial primary key, g text, data jsonb)")
        out: dict[str, float] = {}
        for per_commit in (1, 100):
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO bench_raw (g, data) VALUES (%s, %s)",
                        [("gw", row)] * per_commit,
                    )
                n += per_commit
            out[f"rows_per_s_{per_commit}_per_commit"] = n / (time.perf_counter() - start)
        conn.execute("DROP TABLE bench_raw")
    return out


def raw_broker(broker: Broker, payload: bytes, n: int = 3000) -> float:
    """QoS 1 messages/s of ``payload``'s size, paho to paho through this broker."""
    return n / raw_transfer(broker, [payload] * n)


# --- central: database, seed, bridge processes ------------------------------------------


@dataclass
class BridgeProc:
    proc: subprocess.Popen[bytes]
    admin_port: int
    log: Path

    def cpu_s(self) -> float:
        """User + system CPU seconds of the process so far (from /proc)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")


def pin(pid: int, cores: set[int]) -> None:
    """Every thread of ``pid`` onto ``cores`` (affinity is per thread on Linux)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with suppress(ProcessLookupError):
            os.sched_setaffinity(int(task.name), cores)


_CORES = sorted(os.sched_getaffinity(0))  # before a --pin run narrows this process's


def split_cores(workers: int) -> tuple[list[set[int]], set[int]]:
    """A core for each worker, the rest for everything else (``--pin``)."""
    cores = _CORES
    if len(cores) <= workers:
        raise SystemExit(f"--pin needs more than {workers} cores; this process has {len(cores)}")
    return [{c} for c in cores[:workers]], set(cores[workers:])


def wait_mqtt(admin_port: int, timeout: float) -> None:
    """Until the bridge's ``/healthz`` says it is connected to the broker: its admin API
    listens first, and a batch published before it subscribes is lost to it on a fresh
    broker (the gateway would send it again after its ack timeout)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        url = f"http://127.0.0.1:{admin_port}/healthz"
        with suppress(OSError, ValueError), urllib.request.urlopen(url, timeout=5) as r:
            if json.load(r).get("mqtt"):
                return
        time.sleep(0.1)
    raise SystemExit(f"the bridge on admin port {admin_port} did not reach the broker")


@contextmanager
def bridges(
    broker: Broker,
    url: str,
    workdir: Path,
    workers: int,
    src: Path | None,
    extra: str = "",
    admin_worker: bool = False,
) -> Iterator[list[BridgeProc]]:
    """``workers`` uplink workers, then (``admin_worker``) one with ``[mqtt] uplink = false``."""
    made: list[BridgeProc] = []
    try:
        for w in range(workers + int(admin_worker)):
            port = free_port()
            cfg = workdir / f"bridge-{w}.toml"
            shared = "true" if workers > 1 else "false"
            # (only the admin worker names the key: an older --bridge-src may not know it)
            uplink = "uplink = false\n" if w == workers else ""
            cfg.write_text(
                f'[central]\ndatabase_url = "{url}"\ndata_dir = "{workdir}/central-{w}"\n'
                f'[admin]\nport = {port}\ntoken = "{ADMIN_TOKEN}"\n'
                f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nshared = {shared}\n'
                + uplink
                + extra.replace("\\n", "\n")
                + "\n"
            )
            log = workdir / f"bridge-{w}.log"
            env = dict(os.environ)
            if src is not None:
                cmd = [sys.executable, "-m", "cloud_bridge", "run", "--config", str(cfg)]
                env["PYTHONPATH"] = str(src)
            else:
                exe = Path(sys.executable).parent / "outpost-bridge"
                cmd = [str(exe), "run", "--config", str(cfg)]
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=src or ROOT
                )
            made.append(BridgeProc(proc, port, log))
        for b in made:
            wait_port(b.admin_port, 60)
            wait_mqtt(b.admin_port, 60)
        yield made
    finally:
        for b in made:
            b.proc.terminate()
        for b in made:
            try:
                b.proc.wait(20)
            except subprocess.TimeoutExpired:
                b.proc.kill()


# --- the admin side while the fleet runs ---------------------------------------------------


async def sign_in(http: aiohttp.ClientSession, base: str) -> None:
    async with http.get(base + "/signin") as r:
        m = CSRF_RE.search(await r.text())
    form = {"username": "vera", "password": VIEWER_PASSWORD, "csrf_token": m.group(1) if m else ""}
    async with http.post(base + "/signin", data=form) as r:
        await r.read()


class Dispatches:
    """The next probe activity to dispatch to the probe site (``probe-<i>``, seeded)."""

    def __init__(self) -> None:
        self.next = 0

    def take(self) -> str:
        self.next += 1
        return f"/api/v1/activities/probe-{self.next - 1}/dispatch"


async def dispatch_once(http: aiohttp.ClientSession, base: str, probes: Dispatches) -> bool:
    if probes.next >= PROBES:
        return False
    async with http.post(base + probes.take(), json={"gateway_id": PROBE_SITE}) as r:
        await r.read()
        return r.status == 200


async def probe_api(
    base: str,
    stop: asyncio.Event,
    out: dict[str, list[float]],
    probes: Dispatches,
    since: float = 0.0,
) -> None:
    """Every second: one page of the fleet, the summary, the /fleet page and one dispatch
    (an admin's write: its transaction and the broker's PUBACK); their latencies. Calls
    begun before ``since`` (monotonic: the warm-up, with the fleet's "online" states
    still being applied) are kept apart, as ``<name>_warmup``."""

    def note(name: str, began: float, took: float, ok: bool) -> None:
        key = name if began >= since else f"{name}_warmup"
        if ok:
            out.setdefault(key, []).append(took)
        else:
            out.setdefault(key + "_failed", []).append(1.0)

    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    jar = aiohttp.CookieJar(unsafe=True)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(cookie_jar=jar, timeout=timeout) as page_http:
        await sign_in(page_http, base)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:
            while not stop.is_set():
                for name, session, path in (
                    ("page", http, "/api/v1/gateways?limit=50"),
                    ("summary", http, "/api/v1/fleet/summary"),
                    ("fleet_html", page_http, "/fleet"),
                ):
                    began, t = time.monotonic(), time.perf_counter()
                    try:
                        async with session.get(base + path) as r:
                            await r.read()
                            ok = r.status == 200
                    except (aiohttp.ClientError, TimeoutError):
                        ok = False
                    note(name, began, time.perf_counter() - t, ok)
                began, t = time.monotonic(), time.perf_counter()
                try:
                    ok = await dispatch_once(http, base, probes)
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                note("dispatch", began, time.perf_counter() - t, ok)
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all cores so far (/proc/stat): is the machine the limit?"""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


async def sample_cpu(
    procs: list[BridgeProc], stop: asyncio.Event, out: dict[str, Any], window: tuple[float, float]
) -> None:
    """Each bridge's CPU over ``window`` (monotonic start, end) and peak RSS."""
    start_cpu: list[float] | None = None
    peak = [0.0] * len(procs)
    while not stop.is_set():
        t = time.monotonic()
        if start_cpu is None and t >= window[0]:
            start_cpu = [p.cpu_s() for p in procs]
            out["cpu_t0"] = t
            machine0 = machine_cpu()
        if start_cpu is not None and t <= window[1]:
            out["cpu"] = [
                (p.cpu_s() - c) / max(t - out["cpu_t0"], 1e-9) * 100
                for p, c in zip(procs, start_cpu, strict=True)
            ]
            busy, total = (b - a for a, b in zip(machine0, machine_cpu(), strict=True))
            out["machine_busy_pct"] = busy / max(total, 1e-9) * 100
        peak = [max(a, p.rss_mb()) for a, p in zip(peak, procs, strict=True)]
        out["rss_mb"] = peak
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def api_cost(
    base: str, procs: list[BridgeProc], probes: Dispatches, n: int = 20
) -> dict[str, Any]:
    """Before any gateway connects: wall time and the bridge's CPU per call, ``n`` calls each."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    out: dict[str, Any] = {}
    jar = aiohttp.CookieJar(unsafe=True)
    async with (
        aiohttp.ClientSession(cookie_jar=jar) as page_http,
        aiohttp.ClientSession(headers=headers) as http,
    ):
        await sign_in(page_http, base)
        for name, session, path in (
            ("page", http, "/api/v1/gateways?limit=50"),
            ("page_q", http, "/api/v1/gateways?limit=50&q=known-0004&health=critical"),
            ("summary", http, "/api/v1/fleet/summary"),
            ("fleet_html", page_http, "/fleet"),
        ):
            walls = []
            cpu0 = procs[0].cpu_s()
            for _ in range(n):
                t = time.perf_counter()
                async with session.get(base + path) as r:
                    await r.read()
                    assert r.status == 200, (path, r.status)
                walls.append(time.perf_counter() - t)
            out[name] = {
                "bridge_cpu_ms_per_call": round((procs[0].cpu_s() - cpu0) / n * 1000, 1),
                "p50_ms": round(pct(walls, 50) * 1000, 1),
                "max_ms": round(max(walls) * 1000, 1),
            }
        walls = []
        cpu0 = procs[0].cpu_s()
        for _ in range(n):
            t = time.perf_counter()
            assert await dispatch_once(http, base, probes)
            walls.append(time.perf_counter() - t)
        out["dispatch"] = {
            "bridge_cpu_ms_per_call": round((procs[0].cpu_s() - cpu0) / n * 1000, 1),
            "p50_ms": round(pct(walls, 50) * 1000, 1),
            "max_ms": round(max(walls) * 1000, 1),
        }
    return out


async def bridge_clocks(
    procs: list[BridgeProc], window: tuple[float, float], out: dict[str, Any]
) -> None:
    """Each bridge's own event-loop lag and publish -> PUBACK times over ``window``."""

    def scrape() -> list[dict[str, dict[str, float]]]:
        return [bridge_histograms(f"http://127.0.0.1:{p.admin_port}", ADMIN_TOKEN) for p in procs]

    await asyncio.sleep(max(0.0, window[0] - time.monotonic()))
    before = await asyncio.to_thread(scrape)
    await asyncio.sleep(max(0.0, window[1] - time.monotonic()))
    after = await asyncio.to_thread(scrape)
    for key, unit in (
        ("loop_lag", "ms"),
        ("dispatch_puback", "ms"),
        ("results_puback", "ms"),
        ("heartbeat_groups", ""),  # heartbeats per transaction
        ("replay_groups", ""),  # batches per commit group
    ):
        out[key] = [
            between(a.get(key, {}), b.get(key, {}), unit)
            for a, b in zip(before, after, strict=True)
        ]


async def pg_waits(url: str, stop: asyncio.Event, out: dict[str, Any]) -> None:
    """Twice a second: what this database's active backends wait on (pg_stat_activity).

    Row locks between workers would show as ``Lock`` waits (``transactionid``,
    ``tuple``); commits as ``IO``/``LWLock`` (WAL) waits."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    conn = await psycopg.AsyncConnection.connect(
        host=u.host, port=u.port or 5432, user=u.username, dbname=u.database, autocommit=True
    )
    counts: dict[str, int] = {}
    samples = 0
    try:
        while not stop.is_set():
            cur = await conn.execute(
                "SELECT state || ' ' || coalesce(wait_event_type || ':' || wait_event, 'cpu'), "
                "count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state <> 'idle' AND pid <> pg_backend_pid() GROUP BY 1"
            )
            for what, n in await cur.fetchall():
                counts[what] = counts.get(what, 0) + n
            samples += 1
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    finally:
        await conn.close()
    # mean number of backends in each state over the samples
    out.update(
        {k: round(v / max(samples, 1), 2) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}
    )


async def loop_lag(stop: asyncio.Event, out: list[float]) -> None:
    """How late this (simulator) process's event loop wakes: is the simulator keeping up?"""
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.1)
        out.append(time.perf_counter() - t - 0.1)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- the runs ------------------------------------------------------------------------------


async def connect_all(sims: list[SimGateway], at_once: bool) -> float:
    t = time.perf_counter()
    if at_once:
        await asyncio.gather(*(s.start() for s in sims))
    else:
        for i in range(0, len(sims), 50):  # 50 at a time: a fleet coming up, not a storm
            await asyncio.gather(*(s.start() for s in sims[i : i + 50]))
    return time.perf_counter() - t


@dataclass
class Bulk:
    rounds: list[float]  # env/s of each round
    cpu_ms: list[float]  # the uplink worker's CPU per envelope, ms, each round
    seq: int  # the bulk gateway's last seq: its activity goes on from there

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    def figures(self, args: argparse.Namespace, small_env_s: float) -> dict[str, Any]:
        """The bulk rounds' figures and the small batches' rate against them."""
        return {
            "bulk_env_s": round(self.median, 1),
            "bulk_env_s_rounds": [round(b, 1) for b in self.rounds],
            "bulk_envelopes": args.bulk_rounds * args.bulk_envelopes,
            "bulk_window": args.bulk_window,
            "small_to_bulk": round(small_env_s / self.median, 2),
            # against the fastest and the slowest round: how much of the ratio is their spread
            "small_to_bulk_range": [
                round(small_env_s / max(self.rounds), 2),
                round(small_env_s / min(self.rounds), 2),
            ],
            # CPU, not rate: a bulk round's batches of one activity apply one group after
            # another, so it may wait on commits with the worker's core idle
            "bulk_cpu_ms_per_env": round(statistics.median(self.cpu_ms), 3),
        }


async def bulk_rate(
    args: argparse.Namespace, port: int, procs: list[BridgeProc], stats: Stats, gid: str
) -> Bulk:
    """The same bridge's bulk rate: one gateway's backlog in batches of 200, in
    --bulk-rounds rounds of --bulk-envelopes each; ratios are taken against their median
    (one round of 2,000 lasted < 1 s and swung 2,300-4,400 env/s with the machine's load)."""
    bulk = SimGateway(gid, port, stats, args.ack_timeout)  # (ana's, the first gateway)
    await bulk.start()
    rounds: list[float] = []
    cpu: list[float] = []
    for _ in range(args.bulk_rounds):
        t_bulk = time.monotonic()
        cpu_bulk = procs[0].cpu_s()
        await bulk.run_backlog(args.bulk_envelopes, 200, args.bulk_window)
        rounds.append(args.bulk_envelopes / (time.monotonic() - t_bulk))
        cpu.append((procs[0].cpu_s() - cpu_bulk) / args.bulk_envelopes * 1000)
    await bulk.stop()
    return Bulk(rounds, cpu, bulk.seq)


async def steady(
    args: argparse.Namespace, port: int, procs: list[BridgeProc], broker: BridgeProc
) -> dict[str, Any]:
    stats = Stats()
    ids = [f"sim-{i:05d}" for i in range(args.gateways)]
    base = f"http://127.0.0.1:{procs[0].admin_port}"
    probes = Dispatches()
    idle_api = await api_cost(base, procs, probes)
    admin_base = f"http://127.0.0.1:{procs[-1].admin_port}" if args.admin_worker else None
    if admin_base is not None:
        idle_api["admin_worker"] = await api_cost(admin_base, procs[-1:], probes)
    bulk = await bulk_rate(args, port, procs, stats, ids[0])
    crew = authors(ids)
    sims = [SimGateway(g, port, stats, args.ack_timeout, crew[g]) for g in ids]
    sims[0].seq = bulk.seq  # its activity goes on from there
    connect_s = await connect_all(sims, at_once=False)
    t0 = time.monotonic()
    window = (t0 + args.warmup, t0 + args.warmup + args.duration)
    stop = asyncio.Event()
    api: dict[str, list[float]] = {}
    admin_api: dict[str, list[float]] = {}
    cpu: dict[str, Any] = {}
    lag: list[float] = []
    clocks: dict[str, Any] = {}
    waits: dict[str, Any] = {}
    sim_cpu0 = time.process_time()
    side = [
        asyncio.create_task(probe_api(base, stop, api, probes, window[0])),
        *(
            [asyncio.create_task(probe_api(admin_base, stop, admin_api, probes, window[0]))]
            if admin_base
            else []
        ),
        asyncio.create_task(sample_cpu([*procs, broker], stop, cpu, window)),
        asyncio.create_task(loop_lag(stop, lag)),
        asyncio.create_task(bridge_clocks(procs, window, clocks)),
        asyncio.create_task(pg_waits(args.url, stop, waits)),
    ]
    if args.saturate:
        await asyncio.gather(*(s.run_saturating(window[1]) for s in sims))
    else:
        await asyncio.gather(*(s.run_steady(window[1]) for s in sims))
    # what is still unanswered: wait (resending per ack timeout) up to --drain-timeout
    sim_cpu_pct = (time.process_time() - sim_cpu0) / (time.monotonic() - t0) * 100
    end = time.monotonic()
    while any(s.pending for s in sims) and time.monotonic() < end + args.drain_timeout:
        for s in sims:
            await s.resend_due()
        await asyncio.sleep(0.5)
    drained_after_s = time.monotonic() - end
    stop.set()
    await asyncio.gather(*side)
    unanswered = sum(len(s.pending) for s in sims)
    await asyncio.gather(*(s.stop() for s in sims))
    # batches sent in the window (not the warm-up's, answered late in it)
    in_window = [lat for at, lat in stats.latencies if window[0] <= at - lat <= window[1]]
    applied = sum(1 for at in stats.applied if window[0] <= at <= window[1])
    return {
        "mode": "saturate" if args.saturate else "steady",
        "gateways": args.gateways,
        "workers": args.workers,
        "connect_s": round(connect_s, 1),
        "offered_env_s": "all it takes" if args.saturate else args.gateways * PER_BATCH / BATCH_S,
        "applied_env_s": round(applied / args.duration, 1),
        **bulk.figures(args, applied / args.duration),
        "small_cpu_ms_per_env": round(
            cpu.get("cpu", [0.0])[0] / 100 / max(applied / args.duration, 1e-9) * 1000, 3
        ),
        "ack_p50_ms": round(pct(in_window, 50) * 1000, 1),
        "ack_p99_ms": round(pct(in_window, 99) * 1000, 1),
        "batches": stats.batches,
        "resends": stats.resends,
        "deferred": stats.deferred,
        "answered_elsewhere": stats.answered_elsewhere,
        "unanswered_batches": unanswered,
        "drain_after_stop_s": round(drained_after_s, 1),
        "bridge_cpu_pct": [round(c, 1) for c in cpu.get("cpu", [])[:-1]],
        "bridge_rss_mb": [round(r, 1) for r in cpu.get("rss_mb", [])[:-1]],
        "broker_cpu_pct": round(cpu.get("cpu", [float("nan")])[-1], 1),
        "simulator_cpu_pct": round(sim_cpu_pct, 1),
        "machine_busy_pct": round(cpu.get("machine_busy_pct", float("nan")), 1),
        "simulator_loop_lag_p99_ms": round(pct(lag, 99) * 1000, 1),
        "api": summarize(api),
        "api_on_admin_worker": summarize(admin_api),
        "api_idle": idle_api,
        "bridge_clocks": clocks,
        "pg_backends_waiting_on": waits,
        "stats": stats,
    }


async def wait_idle(procs: list[BridgeProc], idle_pct: float = 5.0, limit_s: float = 120) -> float:
    """Wait until every process in ``procs`` uses under ``idle_pct`` of a core over 0.5 s."""
    t0 = time.monotonic()
    while time.monotonic() < t0 + limit_s:
        before = [p.cpu_s() for p in procs]
        await asyncio.sleep(0.5)
        if all((p.cpu_s() - b) / 0.5 * 100 < idle_pct for p, b in zip(procs, before, strict=True)):
            break
    return time.monotonic() - t0


async def queued(
    args: argparse.Namespace, port: int, procs: list[BridgeProc], broker: BridgeProc
) -> dict[str, Any]:
    """``--queued``: the fleet's small batches wait at the broker, then the worker(s) drain
    them with the simulator idle, so the ceiling is the worker's, not what the simulator
    could offer on the cores it shares with it (as after an outage: every gateway's
    batches are there at once)."""
    with ledger_counter(args.url) as decided:
        return await _queued(args, port, procs, decided)


async def _queued(
    args: argparse.Namespace, port: int, procs: list[BridgeProc], decided: Callable[[], int]
) -> dict[str, Any]:
    stats = Stats()
    ids = [f"sim-{i:05d}" for i in range(args.gateways)]
    bulk = await bulk_rate(args, port, procs, stats, ids[0])
    crew = authors(ids)
    sims = [SimGateway(g, port, stats, args.ack_timeout, crew[g]) for g in ids]
    sims[0].seq = bulk.seq
    connect_s = await connect_all(sims, at_once=False)
    uplink = procs[: args.workers]
    settle_s = await wait_idle(uplink)  # each gateway's retained "online" state applied
    envelopes = args.gateways * args.queued_batches * PER_BATCH
    beats_before, heartbeats, before = stats.heartbeats, 0, 0
    for b in uplink:  # still connected, keepalive 30 s: the broker holds what comes
        os.kill(b.proc.pid, signal.SIGSTOP)
    try:
        t_queue = time.monotonic()

        async def fill(s: SimGateway) -> None:
            # (no heartbeat here: the fleet's come on their 30 s beat while it drains)
            for _ in range(args.queued_batches):
                p = s.new_batch(PER_BATCH)
                stats.batches += 1
                await s.client.async_publish(
                    topics.topic(s.gid, topics.UP_ENVELOPES), p.payload, qos=1
                )  # waits for the broker's PUBACK: it holds the batch

        for i in range(0, len(sims), 100):
            await asyncio.gather(*(fill(s) for s in sims[i : i + 100]))
        if args.sim_idle:
            # The heartbeats a drain at half the bulk rate would see, queued with the
            # batches: the simulator sends none while it is idle.
            expect_s = envelopes / (bulk.median * 0.5)
            for s in sims[: min(len(sims), math.ceil(len(sims) * expect_s / HEARTBEAT_S))]:
                await s.heartbeat()
            heartbeats = stats.heartbeats - beats_before
            before = decided()
        queue_s = time.monotonic() - t_queue
        if queue_s > 25:
            raise SystemExit(f"queueing took {queue_s:.0f} s: the paused worker's keepalive ends")
    finally:
        for b in uplink:
            os.kill(b.proc.pid, signal.SIGCONT)
    t0 = time.monotonic()
    cpu0 = [b.cpu_s() for b in uplink]
    machine0 = machine_cpu()
    for s in sims:  # the ack timeout counts from here, not from the pause
        for p in s.pending.values():
            p.first_sent = p.sent = t0
    beats = sorted((t0 + random.uniform(0, HEARTBEAT_S), i) for i in range(len(sims)))
    done: float | None = None
    if args.sim_idle:
        # The event loop is held on purpose: the fleet's answers wait in the sockets and
        # at the broker, and the simulator's CPU (~40 % of a core) stays off the worker's
        # machine. The drain ends when the ledger holds every queued envelope (polled
        # every 0.1 s: a drain measured up to 0.1 s long, never short).
        while time.monotonic() < t0 + args.drain_timeout:
            if decided() >= before + envelopes:
                done = time.monotonic()
                break
            time.sleep(0.1)
        cpu_end = [b.cpu_s() for b in uplink]
        machine_end = machine_cpu()
        beats = []  # sent with the batches
    while any(s.pending for s in sims) and time.monotonic() < t0 + args.drain_timeout:
        while heartbeats < len(beats) and beats[heartbeats][0] <= time.monotonic():
            await sims[beats[heartbeats][1]].heartbeat()
            heartbeats += 1
        for s in sims:
            await s.resend_due()
        await asyncio.sleep(0.02)
    if not args.sim_idle:
        cpu_end = [b.cpu_s() for b in uplink]
        machine_end = machine_cpu()
        done = max((at for at, _ in stats.latencies if at >= t0), default=time.monotonic())
    cpu = [(e - c) for e, c in zip(cpu_end, cpu0, strict=True)]
    busy, total = (b - a for a, b in zip(machine0, machine_end, strict=True))
    unanswered = sum(len(s.pending) for s in sims)
    drain_s = (done or time.monotonic()) - t0
    # Idle, the simulator read its answers only after the drain: their latency is its own.
    latencies = [] if args.sim_idle else [lat for at, lat in stats.latencies if at >= t0]
    await asyncio.gather(*(s.stop() for s in sims))
    rate = envelopes / drain_s
    return {
        "mode": "queued",
        "gateways": args.gateways,
        "workers": args.workers,
        "queued_batches_per_gateway": args.queued_batches,
        "queued_envelopes": envelopes,
        "heartbeats_in_drain": heartbeats,
        "connect_s": round(connect_s, 1),
        "settle_s": round(settle_s, 1),
        "queue_s": round(queue_s, 1),
        "drain_s": round(drain_s, 2),
        "applied_env_s": round(rate, 1),
        **bulk.figures(args, rate),
        "small_cpu_ms_per_env": round(sum(cpu) / envelopes * 1000, 3),
        "bridge_cpu_pct": [round(c / drain_s * 100, 1) for c in cpu],
        "machine_busy_pct": round(busy / max(total, 1e-9) * 100, 1),
        "sim_idle": args.sim_idle,
        "ack_p50_ms": round(pct(latencies, 50) * 1000, 1),
        "ack_p99_ms": round(pct(latencies, 99) * 1000, 1),
        "batches": stats.batches,
        "resends": stats.resends,
        "deferred": stats.deferred,
        "answered_elsewhere": stats.answered_elsewhere,
        "unanswered_batches": unanswered,
        "stats": stats,
    }


async def outage(
    args: argparse.Namespace, port: int, procs: list[BridgeProc], broker: BridgeProc
) -> dict[str, Any]:
    stats = Stats()
    ids = [f"sim-{i:05d}" for i in range(args.gateways)]
    crew = authors(ids)
    sims = [SimGateway(g, port, stats, args.ack_timeout, crew[g]) for g in ids]
    stop = asyncio.Event()
    api: dict[str, list[float]] = {}
    cpu: dict[str, Any] = {}
    t0 = time.monotonic()
    base = f"http://127.0.0.1:{procs[0].admin_port}"
    side = [
        asyncio.create_task(probe_api(base, stop, api, Dispatches())),
        asyncio.create_task(sample_cpu([*procs, broker], stop, cpu, (t0, t0 + 1e9))),
    ]
    connect_s = await connect_all(sims, at_once=True)
    await asyncio.gather(*(s.run_backlog(args.backlog, args.outage_batch) for s in sims))
    drain_s = time.monotonic() - t0
    stop.set()
    await asyncio.gather(*side)
    await asyncio.gather(*(s.stop() for s in sims))
    return {
        "mode": "outage",
        "gateways": args.gateways,
        "workers": args.workers,
        "backlog": args.backlog,
        "connect_s": round(connect_s, 1),
        "drain_s": round(drain_s, 1),
        "applied_env_s": round(len(stats.applied) / drain_s, 1),
        "batches": stats.batches,
        "resends": stats.resends,
        "deferred": stats.deferred,
        "answered_elsewhere": stats.answered_elsewhere,
        "max_sends_of_a_batch": stats.max_sends,
        "ack_p50_ms": round(pct([lat for _, lat in stats.latencies], 50) * 1000, 1),
        "ack_p99_ms": round(pct([lat for _, lat in stats.latencies], 99) * 1000, 1),
        "bridge_cpu_pct": [round(c, 1) for c in cpu.get("cpu", [])[:-1]],
        "bridge_rss_mb": [round(r, 1) for r in cpu.get("rss_mb", [])[:-1]],
        "broker_cpu_pct": round(cpu.get("cpu", [float("nan")])[-1], 1),
        "api": summarize(api),
        "stats": stats,
    }


def summarize(api: dict[str, list[float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, values in api.items():
        if name.endswith("_failed"):
            out[name] = len(values)
        else:
            out[name] = {
                "n": len(values),
                "p50_ms": round(pct(values, 50) * 1000, 1),
                "p99_ms": round(pct(values, 99) * 1000, 1),
            }
    return out


@contextmanager
def ledger_counter(url: str) -> Iterator[Callable[[], int]]:
    """How many envelopes central has decided, asked on one connection (blocking, on
    purpose: see ``--sim-idle``)."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    with psycopg.connect(
        host=u.host, port=u.port or 5432, user=u.username, dbname=u.database, autocommit=True
    ) as conn:

        def count() -> int:
            row = conn.execute(
                f"SELECT count(*) FROM {LedgerEntry.__tablename__} WHERE applied_at IS NOT NULL"
            ).fetchone()
            return int(row[0]) if row else 0

        yield count


def check_exactly_once(url: str, stats: Stats) -> dict[str, Any]:
    """Every envelope sent is in the ledger once, applied; nothing else is."""
    from sqlalchemy import func, select

    db = Database.from_url(url)
    try:
        with db.session() as s:
            rows = s.execute(
                select(LedgerEntry.envelope_id, LedgerEntry.outcome).where(
                    LedgerEntry.gateway_id.like("sim-%")
                )
            ).all()
            gateways = s.scalar(select(func.count()).select_from(Gateway)) or 0
    finally:
        db.dispose()
    ledger = {eid for eid, _ in rows}
    return {
        "sent": len(stats.sent_envelopes),
        "in_ledger": len(rows),
        "missing": len(stats.sent_envelopes - ledger),
        "unexpected": len(ledger - stats.sent_envelopes),
        "not_applied": sum(1 for _, o in rows if o != "applied"),
        "unanswered": len(stats.sent_envelopes - stats.answered_envelopes),
        "rejected": stats.rejected[:3],
        "gateways_known": gateways,
    }


def one_run(args: argparse.Namespace, src: Path | None) -> dict[str, Any]:
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleet-scale-")))
        broker = Broker(work / "broker", persistence=False).start()
        stack.callback(broker.stop)
        url = stack.enter_context(postgres_database(args.pg))
        if url is None:
            raise SystemExit("PostgreSQL is needed (--pg)")
        if args.pin:
            worker_cores, rest = split_cores(args.workers)
            pin(os.getpid(), rest)  # the simulator and the raw limits' probes
        sample = encode(
            EnvelopeBatch(
                gateway_id="sim-00000",
                batch_id=uuid.uuid4(),
                sent_at=now(),
                envelopes=[envelope("act-x", 1), envelope("act-x", 2)],
            )
        )
        limits = {
            "load_before": loadavg(),
            "raw_broker_msg_s": round(raw_broker(broker, sample), 1),
            "batch_bytes": len(sample),
            **{k: round(v, 1) for k, v in raw_postgres(url).items()},
        }
        ids = [f"sim-{i:05d}" for i in range(args.gateways)]
        t = time.perf_counter()
        seed(url, ids, max(args.known, args.gateways), probes=PROBES)
        limits["seed_s"] = round(time.perf_counter() - t, 1)
        procs = stack.enter_context(
            bridges(broker, url, work, args.workers, src, args.bridge_toml, args.admin_worker)
        )
        args.url = url
        run = outage if args.outage else queued if args.queued else steady
        assert broker.proc is not None
        mosquitto = BridgeProc(broker.proc, broker.port, broker.log)
        if args.pin:
            pin(broker.proc.pid, rest)
            for proc, cores in zip(procs, worker_cores, strict=False):
                pin(proc.proc.pid, cores)
            for extra in procs[len(worker_cores) :]:  # an admin worker
                pin(extra.proc.pid, rest)
        result = asyncio.run(run(args, broker.port, procs, mosquitto))
        result["load_after"] = loadavg()
        result["pinned"] = (
            {"workers": [sorted(c) for c in worker_cores], "rest": sorted(rest)}
            if args.pin
            else None
        )
        result["limits"] = limits
        result["check"] = check_exactly_once(url, result.pop("stats"))
        if args.keep_logs:
            for p in procs:
                print(p.log.read_text()[-3000:])
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--known", type=int, default=10_000, help="gateways central knows")
    parser.add_argument("--duration", type=float, default=60, help="steady window, seconds")
    parser.add_argument("--warmup", type=float, default=20)
    parser.add_argument("--ack-timeout", type=float, default=30.0)
    parser.add_argument(
        "--drain-timeout", type=float, default=180, help="after the window: wait this long"
    )
    parser.add_argument("--outage", action="store_true")
    parser.add_argument(
        "--admin-worker",
        action="store_true",
        help="one more bridge with [mqtt] uplink = false; the API is probed on it too",
    )
    parser.add_argument(
        "--saturate",
        action="store_true",
        help="each gateway keeps a batch of 2 in flight: the small-batch ceiling",
    )
    parser.add_argument(
        "--bulk-rounds", type=int, default=5, help="rounds of the bulk replay (median taken)"
    )
    parser.add_argument("--bulk-envelopes", type=int, default=4000, help="envelopes per bulk round")
    parser.add_argument(
        "--bulk-window",
        type=int,
        default=8,
        help="bulk batches in flight: 8, a gateway's [mqtt] inflight_batches (1 before 2026-12-04)",
    )
    parser.add_argument(
        "--queued",
        action="store_true",
        help="the fleet's small batches wait at the broker, then the worker drains them alone",
    )
    parser.add_argument(
        "--queued-batches",
        type=int,
        default=1,
        help="batches of 2 each gateway has waiting (a gateway keeps up to 8 in flight)",
    )
    parser.add_argument(
        "--sim-idle",
        action="store_true",
        help="with --queued: the simulator does nothing while the worker drains (the drain's "
        "end read from the ledger), so its CPU does not compete with the worker's",
    )
    parser.add_argument("--backlog", type=int, default=100)
    parser.add_argument("--outage-batch", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--bridge-src", type=Path, default=None)
    parser.add_argument(
        "--bridge-toml",
        default="",
        help="more bridge.toml, e.g. '[replay]\\ngroup_max_envelopes = 1' (\\n for newlines)",
    )
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="a core for each uplink worker, the rest for the simulator and the broker",
    )
    parser.add_argument("--json", type=Path, default=None, help="append results here")
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "OUTPOST_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1/test"
        ),
    )
    args = parser.parse_args()
    results = []
    for i in range(args.repeat):
        r = one_run(args, args.bridge_src)
        r["repeat"] = i + 1
        r["bridge"] = str(args.bridge_src or "this checkout") + (
            f" with {args.bridge_toml!r}" if args.bridge_toml else ""
        )
        print(json.dumps(r, indent=1, default=str), flush=True)
        results.append(r)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(r, default=str) + "\n")
    if len(results) > 1:
        key = "drain_s" if args.outage else "applied_env_s"
        values = [r[key] for r in results]
        p99 = [r["ack_p99_ms"] for r in results]
        print(
            f"{key}: median {statistics.median(values)} (min {min(values)}, max {max(values)}); "
            f"ack p99 ms: median {statistics.median(p99)} (min {min(p99)}, max {max(p99)})"
        )
        if not args.outage:
            ratio = [r["small_to_bulk"] for r in results]
            print(
                f"small_to_bulk: median {statistics.median(ratio)} "
                f"(min {min(ratio)}, max {max(ratio)})"
            )


if __name__ == "__main__":
    main()
