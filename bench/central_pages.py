"""How long the platform's main pages take with a realistic fleet, against two floors.

Seeds a central database (``--activities`` activities in every state, each
completed one with its applied record, 5 child rows and its envelopes in the
ledger, one in ten with a rejection first; ``--gateways`` gateways heard every
minute for a day; audit entries) and starts a real ``outpost-bridge run`` on
it. Then a signed-in browser (cookie session, no JavaScript) asks, one request
at a time:

- ``/activities`` (the default Online tab) and ``/activities?state=completed``
  (each shows the newest ``LIST_LIMIT`` of thousands),
- ``/activities/{id}``: an activity with 12 rounds of envelopes (timeline,
  record, child rows),
- the approval: the responsible crew member's ``GET`` of the activity page
  with the password form, and ``POST …/approve`` with the password,
- ``/fleet``: the fleet's first screen.

Floors measured in the same run, against the same client: a bare aiohttp
handler answering a 20 KiB HTML page from its own process (the HTTP round
trip), and the page's main ``SELECT`` run raw with SQLAlchemy Core (the
database's part). The approval's POST has a third: one argon2 verify with the
same parameters. Each page is asked ``--repeat`` times after a warm-up;
figures are the median with min-max.

    .venv/bin/python bench/central_pages.py [--activities 20000] [--gateways 40] [--repeat 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import func, insert, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.central_ingest import postgres_database
from cloud_bridge import rules
from cloud_bridge.db import Database
from cloud_bridge.migration import migrate
from cloud_bridge.models import (
    Activity,
    AuditEntry,
    Gateway,
    GatewayHistory,
    LedgerEntry,
    Record,
    RecordRow,
)
from cloud_bridge.web.pages import LIST_LIMIT
from outpost.forms import ActivityTypeDef
from outpost.passwords import hash_password, verify_password
from tests.support.broker import Broker, free_port, wait_port

TOKEN = "bench-token-0123456789"
PASSWORD = "bench page password"
DETAIL = "act-detail"
FORM = {
    "fields": [
        {"name": "site_ok", "type": "boolean"},
        {"name": "notes", "type": "text"},
        {"name": "risk", "type": "choice", "options": ["low", "medium", "high"]},
        {"name": "temperature", "type": "number"},
    ],
    "tables": [
        {
            "name": "readings",
            "fields": [{"name": "meter", "type": "text"}, {"name": "value", "type": "number"}],
        }
    ],
}
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def _hb(i: int, at: datetime) -> dict[str, Any]:
    return {
        "counts": {"stored": 1, "queued": i % 4, "sent": 0, "applied": 400 + i, "rejected": i % 3},
        "oldest_pending_s": 30.0 * (i % 4),
        "rejected": i % 3,
        "disk_free_bytes": (20 - i % 19) * 10**9,
        "db_bytes": 10**7,
        "replica_lag_s": 0.5,
        "replica_error": None,
        "devices": 1 + i % 6,
        "last_sync": at.isoformat().replace("+00:00", "Z"),
        "cert_expires_at": "2027-11-23T00:00:00Z",
        "version": "0.1.0",
        "uptime_s": 86400,
    }


def seed(url: str, activities: int, gateways: int) -> dict[str, int]:
    db = Database.from_url(url)
    migrate(db.engine)
    sites = [f"site-{g:03d}" for g in range(gateways)]
    with db.session() as s:
        rules.put_user(s, "admin", PASSWORD, False, role="admin")
        for u in ("ana", "ben", "caro", "dev"):
            rules.put_user(s, u, PASSWORD, True, role="crew", sites=sites[:4])
        rules.put_activity_type(
            s, ActivityTypeDef.model_validate({"name": "visit", "offline": True, "form": FORM})
        )
    now = datetime.now(UTC)
    crew = ("ana", "ben", "caro", "dev")
    acts: list[dict[str, Any]] = []
    recs: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    ledger: list[dict[str, Any]] = []
    for i in range(activities):
        aid = f"act-{i:07d}"
        at = now - timedelta(seconds=(activities - i) * 30)
        kind = i % 20  # 14 completed, 2 offline, 3 online, 1 canceled in every 20
        state = "offline" if kind in (14, 15) else ("canceled" if kind == 19 else "online")
        gw = sites[i % gateways]
        who = crew[i % 4]
        acts.append(
            {
                "id": aid,
                "title": f"Inspection {i} at {gw}",
                "type": "visit",
                "responsible": who,
                "approver": who,
                "approved_at": at,
                "approved_via": "password",
                "state": state,
                "holder_gateway": gw if state == "offline" else None,
                "holder_user": who if state == "offline" else None,
                "checked_out_at": at if state == "offline" else None,
                "checkout_no": 1,
                "last_seq": 2 if kind < 14 else 0,
                "version": 3,
                "created_at": at,
                "updated_at": at + timedelta(seconds=20),
            }
        )
        if kind >= 14:
            continue
        recs.append(
            {
                "activity_id": aid,
                "data": {"site_ok": True, "notes": "fence fine", "risk": "low", "temperature": 21},
                "envelope_id": f"00000000-0000-4000-8000-{i:012d}",
                "seq": 2,
                "status": "completed",
                "attachments": [],
                "form_version": 1,
                "updated_at": at + timedelta(seconds=20),
            }
        )
        rows.extend(
            {
                "activity_id": aid,
                "table_name": "readings",
                "row_index": r,
                "data": {"meter": f"M{r}", "value": r * 1.5},
            }
            for r in range(5)
        )
        for seq in (1, 2):
            rejected = seq == 1 and i % 10 == 0
            ledger.append(
                {
                    "envelope_id": f"{seq:08d}-0000-4000-8000-{i:012d}",
                    "gateway_id": gw,
                    "activity_id": aid,
                    "checkout_no": 1,
                    "seq": seq,
                    "base_version": 2,
                    "status": "draft" if seq == 1 else "completed",
                    "author": who,
                    "form_version": 1,
                    "outcome": "rejected" if rejected else "applied",
                    "code": "validation_failed" if rejected else None,
                    "reason": "notes is required." if rejected else None,
                    "created_at": at,
                    "received_at": at + timedelta(seconds=1),
                    "arrived_at": at + timedelta(seconds=5),
                    "applied_at": at + timedelta(seconds=5),
                    "activity_version": 3,
                    "checked_in": True,
                    "attachments": [],
                }
            )
    # The activity the detail page shows: 12 rounds of envelopes, 20 child rows.
    acts.append({**acts[0], "id": DETAIL, "title": "North fence, twelve rounds"})
    for seq in range(1, 13):
        ledger.append(
            {
                **ledger[0],
                "envelope_id": f"{seq:08d}-1111-4000-8000-000000000000",
                "activity_id": DETAIL,
                "seq": seq,
                "outcome": "rejected" if seq % 4 == 0 else "applied",
                "code": "validation_failed" if seq % 4 == 0 else None,
                "reason": "notes is required." if seq % 4 == 0 else None,
            }
        )
    recs.append({**recs[0], "activity_id": DETAIL, "seq": 12})
    rows.extend({**rows[0], "activity_id": DETAIL, "row_index": r} for r in range(20))
    # Waiting for their responsible user's approval (one per timed POST).
    pending = [
        {**acts[0], "id": f"act-pending-{k:04d}", "responsible": "ana", "approver": None,
         "approved_at": None, "approved_via": None, "state": "online", "last_seq": 0}
        for k in range(400)
    ]  # fmt: skip
    history: list[dict[str, Any]] = []
    gws: list[dict[str, Any]] = []
    for g, gw in enumerate(sites):
        gws.append(
            {
                "id": gw,
                "first_seen": now - timedelta(days=30),
                "last_seen": now,
                "state": "online" if g % 9 else "offline",
                "state_at": now - timedelta(hours=2),
                "version": "0.1.0",
                "last_heartbeat": _hb(g, now),
                "heartbeat_at": now - timedelta(seconds=g % 90),
            }
        )
        history.extend(
            {"gateway_id": gw, "kind": "heartbeat", "at": now - timedelta(minutes=m),
             "data": _hb(g, now)}
            for m in range(0, 24 * 60)
        )  # fmt: skip
    audit = [
        {
            "at": now - timedelta(seconds=k),
            "actor": "admin",
            "actor_kind": "user",
            "action": "activity.dispatch",
            "target_type": "activity",
            "target_id": f"act-{k:07d}",
            "summary": f"dispatched activity 'act-{k:07d}'",
            "client": "127.0.0.1",
            "via": "page",
        }
        for k in range(min(activities, 20_000))
    ]
    with db.engine.begin() as conn:
        for model, data in (
            (Activity, acts + pending),
            (Record, recs),
            (RecordRow, rows),
            (LedgerEntry, ledger),
            (Gateway, gws),
            (GatewayHistory, history),
            (AuditEntry, audit),
        ):
            for k in range(0, len(data), 5000):
                conn.execute(insert(model), data[k : k + 5000])
    db.dispose()
    return {"ledger": len(ledger), "history": len(history), "rows": len(rows)}


# --- the floors -------------------------------------------------------------------------

BARE = """
import sys
from aiohttp import web
body = "<!doctype html><title>x</title>" + "<p>" + "x" * 20000 + "</p>"
async def page(request):
    return web.Response(text=body, content_type="text/html")
app = web.Application()
app.router.add_get("/", page)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


@contextmanager
def bare_server() -> Iterator[tuple[int, int]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", BARE, str(port)])
    try:
        wait_port(port, 30)
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(20)


def raw_selects(url: str) -> dict[str, Callable[[], Any]]:
    """The main query of each page, run raw (SQLAlchemy Core, no ORM objects, no template)."""
    db = Database.from_url(url)
    completed = select(Record.activity_id).where(Record.status == "completed")
    cols = (Activity.id, Activity.title, Activity.state, Activity.responsible)

    def run(stmt: Any) -> Callable[[], Any]:
        def go() -> Any:
            with db.engine.connect() as conn:
                return conn.execute(stmt).all()

        return go

    return {
        "online": run(
            select(*cols)
            .where(Activity.state == "online", Activity.id.not_in(completed))
            .order_by(Activity.updated_at.desc(), Activity.id)
            .limit(LIST_LIMIT + 1)
        ),
        "completed": run(
            select(*cols)
            .where(Activity.state == "online", Activity.id.in_(completed))
            .order_by(Activity.updated_at.desc(), Activity.id)
            .limit(LIST_LIMIT + 1)
        ),
        "detail": run(select(LedgerEntry).where(LedgerEntry.activity_id == DETAIL)),
        "fleet": run(select(Gateway)),
        "counts": run(select(Activity.state, func.count()).group_by(Activity.state)),
    }


# --- the bridge and a browser ------------------------------------------------------------


@contextmanager
def bridge(url: str, workdir: Path, broker: Broker) -> Iterator[tuple[int, int]]:
    admin = free_port()
    config = workdir / "bridge.toml"
    config.write_text(
        f'[central]\ndatabase_url = "{url}"\ndata_dir = "{workdir}/central"\n'
        f'[admin]\nport = {admin}\ntoken = "{TOKEN}"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        # The bench signs in once per browser, never guesses.
        "[platform]\nsignin_max_failures = 1000\n"
    )
    with open(workdir / "bridge.log", "wb") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "outpost-bridge"), "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            wait_port(admin, 180)
        except TimeoutError:
            print((workdir / "bridge.log").read_text()[-3000:])
            raise
        yield admin, proc.pid
    finally:
        proc.terminate()
        proc.wait(20)


class Browser:
    def __init__(self, base: str) -> None:
        self.base = base
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    async def get(self, path: str) -> str:
        async with self.http.get(self.base + path) as r:
            text = await r.text()
            assert r.status == 200, (path, r.status, text[:300])
        if m := CSRF_RE.search(text):
            self.csrf = m.group(1)
        return text

    async def post(self, path: str, form: dict[str, str]) -> int:
        data = {**form, "csrf_token": self.csrf}
        async with self.http.post(self.base + path, data=data, allow_redirects=False) as r:
            await r.read()
            return r.status

    async def sign_in(self, name: str) -> None:
        await self.get("/signin")
        assert await self.post("/signin", {"username": name, "password": PASSWORD}) == 303


def cpu_s(pid: int) -> float:
    """CPU time (user + system) a process has used: less swayed by a loaded machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def timed(fn: Callable[[], Any], repeat: int, pid: int) -> tuple[list[float], float]:
    """Wall time of each call, and the server's CPU per call."""
    await fn()  # warm-up
    out = []
    cpu0 = cpu_s(pid)
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t0)
    return out, (cpu_s(pid) - cpu0) / repeat


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:.1f} ms ({min(xs) * 1000:.1f}-{max(xs) * 1000:.1f})"


async def measure(
    url: str, port: int, pid: int, bare_port: int, bare_pid: int, repeat: int
) -> None:
    raw = raw_selects(url)
    async with aiohttp.ClientSession() as http:

        async def bare() -> None:
            async with http.get(f"http://127.0.0.1:{bare_port}/") as r:
                await r.read()

        floor_http, bare_cpu = await timed(bare, repeat * 10, bare_pid)
    floor_db: dict[str, list[float]] = {}
    db_cpu: dict[str, float] = {}
    for name, fn in raw.items():
        fn()
        floor_db[name] = [0.0] * repeat
        c0 = time.process_time()
        for k in range(repeat):
            t0 = time.perf_counter()
            fn()
            floor_db[name][k] = time.perf_counter() - t0
        db_cpu[name] = (time.process_time() - c0) / repeat
    h = hash_password(PASSWORD)
    argon = []
    c0 = time.process_time()
    for _ in range(max(5, repeat // 3)):
        t0 = time.perf_counter()
        verify_password(h, PASSWORD)
        argon.append(time.perf_counter() - t0)
    argon_cpu = (time.process_time() - c0) / len(argon)
    print(
        f"  floor: bare aiohttp 20 KiB page {spread(floor_http)}, "
        f"server CPU {bare_cpu * 1000:.2f} ms; argon2 verify {spread(argon)}, "
        f"CPU {argon_cpu * 1000:.0f} ms"
    )
    for name, xs in floor_db.items():
        print(f"  floor: raw SELECT {name} {spread(xs)}, CPU {db_cpu[name] * 1000:.2f} ms")

    base = f"http://127.0.0.1:{port}"
    admin, ana = Browser(base), Browser(base)
    try:
        await admin.sign_in("admin")
        await ana.sign_in("ana")
        pending = iter(range(400))

        async def approve() -> None:
            aid = f"act-pending-{next(pending):04d}"
            await ana.get(f"/activities/{aid}")
            assert await ana.post(f"/activities/{aid}/approve", {"password": PASSWORD}) == 303

        med_http = statistics.median(floor_http)
        pages: list[tuple[str, Callable[[], Any], str | None, float]] = [
            ("activities (Online tab)", lambda: admin.get("/activities"), "online", 0.0),
            (
                "activities (Completed tab)",
                lambda: admin.get("/activities?state=completed"),
                "completed",
                0.0,
            ),
            ("activity page (12 rounds)", lambda: admin.get(f"/activities/{DETAIL}"), "detail", 0),
            (
                "approval: crew's activity page",
                lambda: ana.get("/activities/act-pending-0399"),
                None,
                0.0,
            ),
            ("approval: page + POST with password", approve, None, statistics.median(argon)),
            ("fleet first screen", lambda: admin.get("/fleet"), "fleet", 0.0),
        ]
        for label, fn, db_name, extra in pages:
            xs, cpu = await timed(fn, repeat, pid)
            floor = med_http + extra
            floor_cpu = bare_cpu + (argon_cpu if extra else 0.0)
            db_part = ""
            if db_name:
                floor += statistics.median(floor_db[db_name])
                floor_cpu += db_cpu[db_name]
                db_part = f" + raw SELECT {statistics.median(floor_db[db_name]) * 1000:.1f} ms"
            if extra:
                db_part += f" + argon2 {extra * 1000:.0f} ms"
            ratios = sorted(x / floor for x in xs)
            print(
                f"  {label}: {spread(xs)}; floor {floor * 1000:.1f} ms (HTTP {med_http * 1000:.1f}"
                f" ms{db_part}); ratio {statistics.median(ratios):.1f}x "
                f"({ratios[0]:.1f}-{ratios[-1]:.1f}); bridge CPU {cpu * 1000:.1f} ms per page, "
                f"floor {floor_cpu * 1000:.1f} ms, ratio {cpu / floor_cpu:.1f}x",
                flush=True,
            )
    finally:
        await admin.http.close()
        await ana.http.close()


def run(name: str, url: str, args: argparse.Namespace, broker: Broker) -> None:
    t0 = time.perf_counter()
    n = seed(url, args.activities, args.gateways)
    print(
        f"{name}: seeded {args.activities:,} activities, {n['ledger']:,} envelopes, "
        f"{n['rows']:,} child rows, {args.gateways} gateways with {n['history']:,} heartbeats, "
        f"in {time.perf_counter() - t0:.0f} s; load {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores",
        flush=True,
    )
    with (
        tempfile.TemporaryDirectory() as tmp,
        bridge(url, Path(tmp), broker) as (port, pid),
        bare_server() as (bare_port, bare_pid),
    ):
        asyncio.run(measure(url, port, pid, bare_port, bare_pid, args.repeat))
    print(f"{name}: load after {os.getloadavg()[0]:.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activities", type=int, default=20_000)
    parser.add_argument("--gateways", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=30)
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
                run("sqlite", f"sqlite:///{tmp}/central.db", args, broker)
            if args.only in (None, "postgresql"):
                with postgres_database(args.pg) as url:
                    if url is not None:
                        run("postgresql", url, args, broker)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
