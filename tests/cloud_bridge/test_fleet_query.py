"""The fleet for thousands: health in SQL agrees with Python, keyset pages, filters, summary."""

from __future__ import annotations

import html
import itertools
import json
import random
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from multidict import MultiDict

from cloud_bridge import fleet, fleet_query
from cloud_bridge.db import Database
from cloud_bridge.errors import CentralError
from cloud_bridge.fleet import Facts, Thresholds, assess
from cloud_bridge.fleet_query import FleetQuery, parse
from cloud_bridge.models import Gateway, GatewayHistory
from cloud_bridge.service import Bridge
from tests.cloud_bridge.conftest import TOKEN

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
T = Thresholds()
GB = 1024**3


def random_gateway(rng: random.Random, gid: str) -> Gateway:
    """A gateway near every threshold's edge, on either side."""

    def around(x: float) -> float:
        return max(0.0, x * rng.choice((0.5, 0.98, 1.02, 3.0)))

    first = NOW - timedelta(seconds=around(T.silent_critical_s))
    g = Gateway(id=gid, first_seen=first, last_seen=first, state=rng.choice(fleet_query.STATES))
    g.state_at = first
    g.replica_failing = False
    if rng.random() < 0.85:
        heard = NOW - timedelta(seconds=rng.choice((5, around(T.silent_warn_s), 100, 119, 121)))
        if rng.random() < 0.2:
            heard = NOW - timedelta(seconds=around(T.silent_critical_s))
        hb: dict[str, Any] = {
            "counts": {"queued": rng.randint(0, 5), "sent": rng.randint(0, 3), "applied": 9},
            "disk_free_bytes": int(around(T.disk_warn_bytes if rng.random() < 0.5 else 256e6)),
            "replica_lag_s": rng.choice((None, around(T.replica_lag_warn_s), 1000.0)),
            "replica_error": rng.choice((None, None, "read-only")),
            "oldest_pending_s": rng.choice(
                (None, around(T.backlog_warn_s), around(T.backlog_critical_s), 3500.0)
            ),
            "cert_expires_at": rng.choice(
                (
                    None,
                    (NOW + timedelta(seconds=around(T.cert_warn_s))).isoformat(),
                    (NOW + timedelta(seconds=around(T.cert_critical_s))).isoformat(),
                    (NOW - timedelta(hours=1)).isoformat(),
                )
            ),
            "version": rng.choice(("0.1.0", "0.2.0")),
        }
        g.last_heartbeat = hb
        g.heartbeat_at = heard
        g.version = hb["version"]
        fleet.set_figures(g, hb, heard)
    if rng.random() < 0.3:  # a healthy one
        g.state, heard = "online", NOW - timedelta(seconds=20)
        hb = {"counts": {"queued": 1}, "disk_free_bytes": 10 * GB, "version": "0.2.0"}
        g.last_heartbeat, g.heartbeat_at, g.version = hb, heard, "0.2.0"
        fleet.set_figures(g, hb, heard)
    elif rng.random() < 0.2:
        g.last_error = "undecodable"
        g.last_error_at = NOW - timedelta(seconds=around(T.error_warn_s))
    return g


@pytest.fixture
def fleet_db(db: Database) -> Database:
    rng = random.Random(18)
    with db.session() as s:
        for i in range(240):
            s.add(random_gateway(rng, f"gw-{i:04d}"))
    return db


def python_levels(db: Database) -> dict[str, str]:
    with db.session() as s:
        return {g.id: assess(Facts.of(g), NOW, T).level for g in s.query(Gateway)}


def test_health_in_sql_is_the_health_in_python(fleet_db: Database) -> None:
    expected = python_levels(fleet_db)
    assert set(expected.values()) == {"ok", "warn", "critical"}  # the sample covers them all
    with fleet_db.session() as s:
        rank = fleet_query.health_rank(T, NOW)
        got = {gid: fleet.LEVELS[r] for gid, r in s.execute(s.query(Gateway.id, rank).statement)}
        assert got == expected
        # and every reason count, as the summary gives it
        reasons: dict[str, int] = {}
        for g in s.query(Gateway):
            for r in assess(Facts.of(g), NOW, T).reasons:
                reasons[r.code] = reasons.get(r.code, 0) + 1
        summary = fleet_query.summary(s, FleetQuery(), T, NOW)
    assert {k: v for k, v in summary["by_reason"].items() if v} == reasons
    # /metrics reads the same figures from the columns
    with fleet_db.session() as s:
        views = {g.id: fleet.gateway_view(g, NOW, T) for g in s.query(Gateway)}
        rows = fleet_query.metric_rows(s, T, NOW)
    assert len(rows) == 240
    for row in rows:
        v = views[row["id"]]
        for key in ("health", "online", "silent_s", "backlog", "disk_free_bytes", "replica_lag_s"):
            assert row[key] == pytest.approx(v[key], abs=0.1), (row["id"], key)
        assert row["oldest_pending_now_s"] == pytest.approx(v["oldest_pending_now_s"], abs=0.1)
        assert fleet.parse_time(row["cert_expires_at"]) == fleet.parse_time(v["cert_expires_at"])
    assert summary["total"] == 240
    assert summary["by_health"] == {
        level: sum(1 for v in expected.values() if v == level) for level in fleet.LEVELS
    }


def walk(db: Database, fq: FleetQuery, limit: int) -> list[dict[str, Any]]:
    """Every page of ``fq`` with ``limit``, following next_cursor."""
    seen: list[dict[str, Any]] = []
    query: dict[str, str] = {"limit": str(limit), "sort": fq.sort, "order": fq.order}
    while True:
        q = parse(query)
        q = FleetQuery(**{**fq.__dict__, "limit": q.limit, "after": q.after, "at": q.at or NOW})
        with db.session() as s:
            got = fleet_query.page(s, q, T, NOW)
        assert len(got.views) <= limit
        seen.extend(got.views)
        if got.next_cursor is None:
            return seen
        query["cursor"] = got.next_cursor


def test_keyset_pages_give_every_gateway_once_in_order(fleet_db: Database) -> None:
    for sort in fleet_query.SORTS:
        for order in ("asc", "desc"):
            check_walk(fleet_db, sort, order)


def check_walk(fleet_db: Database, sort: str, order: str) -> None:
    views = walk(fleet_db, FleetQuery(sort=sort, order=order), 40)  # type: ignore[arg-type]
    ids = [v["id"] for v in views]
    assert len(ids) == len(set(ids)) == 240

    def key(v: dict[str, Any]) -> Any:
        return {
            "health": fleet.LEVELS.index(v["health"]),
            "id": v["id"],
            "last_heard": v["heartbeat_at"] or v["first_seen"],
            "backlog": -1 if v["backlog"] is None else v["backlog"],
            "version": v["version"] or "",
            "state": v["state"],
        }[sort]

    keys = [key(v) for v in views]
    assert keys == sorted(keys, reverse=order == "desc")
    for a, b in itertools.pairwise(views):
        if key(a) == key(b):
            assert a["id"] < b["id"]  # ties by id


def test_filters_narrow_the_walk_and_the_counts(fleet_db: Database) -> None:
    levels = python_levels(fleet_db)
    with fleet_db.session() as s:
        gateways = {g.id: g for g in s.query(Gateway)}
        s.expunge_all()
    cases: list[tuple[dict[str, str], set[str]]] = [
        ({"health": "critical"}, {i for i, v in levels.items() if v == "critical"}),
        ({"health": "ok,warn"}, {i for i, v in levels.items() if v != "critical"}),
        ({"state": "offline"}, {i for i, g in gateways.items() if g.state == "offline"}),
        ({"q": "GW-00"}, {f"gw-{i:04d}" for i in range(100)}),
        ({"q": "_"}, set()),  # a LIKE wildcard is a character, not a pattern
        ({"version": "0.2.0"}, {i for i, g in gateways.items() if g.version == "0.2.0"}),
        (
            {"heard_within": "120"},
            {
                i
                for i, g in gateways.items()
                if g.heartbeat_at and g.heartbeat_at >= NOW - timedelta(seconds=120)
            },
        ),
        (
            {"silent_for": "900"},
            {
                i
                for i, g in gateways.items()
                if (g.heartbeat_at or g.first_seen) <= NOW - timedelta(seconds=900)
            },
        ),
    ]
    for query, expected in cases:
        fq = parse(MultiDict(query))
        assert fq.filtered
        ids = {v["id"] for v in walk(fleet_db, fq, 50)}
        assert ids == expected, query
        with fleet_db.session() as s:
            assert fleet_query.summary(s, fq, T, NOW)["total"] == len(expected)
            assert fleet_query.page(s, fq, T, NOW).total == len(expected)


def test_without_limit_a_small_fleet_is_one_answer_a_large_one_a_page(
    fleet_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fleet_db.session() as s:
        whole = fleet_query.page(s, parse({}), T, NOW)
        assert (len(whole.views), whole.total, whole.next_cursor) == (240, 240, None)
        monkeypatch.setattr(fleet_query, "UNPAGED_MAX", 100)
        first = fleet_query.page(s, parse({}), T, NOW)
        assert (len(first.views), first.total) == (100, 240) and first.next_cursor


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"limit": "0"}, "invalid_limit"),
        ({"limit": "501"}, "invalid_limit"),
        ({"limit": "ten"}, "invalid_limit"),
        ({"limit": "٣"}, "invalid_limit"),  # a digit, but not ASCII
        ({"health": "sick"}, "invalid_health"),
        ({"state": "asleep"}, "invalid_state"),
        ({"q": "x" * 65}, "invalid_q"),
        ({"q": "a\x00b"}, "invalid_q"),
        ({"heard_within": "nan"}, "invalid_heard_within"),
        ({"silent_for": "-1"}, "invalid_silent_for"),
        ({"silent_for": "1e400"}, "invalid_silent_for"),
        ({"sort": "name; drop table"}, "invalid_sort"),
        ({"order": "up"}, "invalid_order"),
        ({"cursor": "!!!"}, "invalid_cursor"),
        ({"cursor": "e30"}, "invalid_cursor"),  # {} in base64
        ({"helth": "ok"}, "invalid_query"),
    ],
)
def test_bad_parameters_are_named(query: dict[str, str], code: str) -> None:
    with pytest.raises(CentralError) as err:
        parse(MultiDict(query))
    assert (err.value.status, err.value.code) == (400, code)


def test_a_cursor_is_for_its_own_sort() -> None:
    fq = parse({"sort": "backlog"})
    cursor = fleet_query.encode_cursor(fq, 3, "gw-1", NOW)
    assert parse({"sort": "backlog", "cursor": cursor}).after == (3, "gw-1")
    with pytest.raises(CentralError):
        parse({"sort": "id", "cursor": cursor})
    with pytest.raises(CentralError):
        parse({"sort": "backlog", "order": "asc", "cursor": cursor})


# --- history: thinned at write, rolled up, indexed ---------------------------------------


def test_history_keeps_one_heartbeat_per_interval_then_one_an_hour(db: Database) -> None:
    from tests.cloud_bridge.test_fleet import hb_message

    with db.session() as s:
        gw = Gateway(id="site-a", first_seen=NOW, last_seen=NOW, state="online")
        s.add(gw)
        s.flush()
        for i in range(120):  # an hour of heartbeats every 30 s
            fleet.note_heartbeat(s, gw, hb_message(), NOW + timedelta(seconds=30 * i))
        kept = s.query(GatewayHistory).count()
        assert kept == 3600 // int(fleet.HISTORY_EVERY_S)
        assert gw.backlog == 3 and gw.disk_free_bytes == 20 * GB
    with db.session() as s:
        gone = fleet.rollup_history(s, NOW, NOW + timedelta(hours=1))
        assert gone == kept - 1
        assert [h.at for h in s.query(GatewayHistory)] == [NOW]


async def test_api_pages_summary_and_refusals(bridge: Bridge) -> None:
    assert bridge.runner is not None
    now = datetime.now(UTC)

    def seed(s: Any) -> None:
        for i in range(30):
            g = Gateway(id=f"site-{i:02d}", first_seen=now, last_seen=now, state="online")
            g.replica_failing = False
            if i % 3:
                hb = {"counts": {"queued": i}, "disk_free_bytes": 10 * GB, "version": "0.2.0"}
                g.last_heartbeat, g.heartbeat_at, g.version = hb, now, "0.2.0"
                fleet.set_figures(g, hb, now)
            s.add(g)

    await bridge.runner.async_tx(seed)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    base = bridge.admin_url + "/api/v1"
    async with aiohttp.ClientSession(headers=headers) as http:
        ids: list[str] = []
        url = base + "/gateways?limit=7&sort=backlog"
        while url:
            async with http.get(url) as r:
                assert r.status == 200
                body = await r.json()
            assert body["total"] == 30 and body["broker_connected"] is True
            ids += [g["id"] for g in body["gateways"]]
            cursor = body["next_cursor"]
            url = f"{base}/gateways?limit=7&sort=backlog&cursor={cursor}" if cursor else ""
        assert len(ids) == len(set(ids)) == 30 and ids[0] == "site-29"
        async with http.get(base + "/fleet/summary?version=0.2.0") as r:
            summary = await r.json()
        assert summary["total"] == 20 and summary["by_health"]["ok"] == 20
        async with http.get(base + "/fleet/summary") as r:
            summary = await r.json()
        assert summary["by_health"]["warn"] == 10 and summary["by_reason"]["never_heard"] == 10
        for bad in ("/gateways?limit=-1", "/gateways?sort=%00", "/fleet/summary?limit=5"):
            async with http.get(base + bad) as r:
                assert r.status == 400, bad
                assert (await r.json())["error"]["code"].startswith("invalid_")
        async with http.get(bridge.admin_url + "/api/v1/openapi.json") as r:
            doc = await r.json()
        op = doc["paths"]["/api/v1/gateways"]["get"]
        assert {p["name"] for p in op["parameters"]} >= {"limit", "cursor", "health", "q"}
        assert "/api/v1/fleet/summary" in doc["paths"]
    async with aiohttp.ClientSession() as http, http.get(base + "/fleet/summary") as r:
        assert r.status == 401


def test_migration_0008_fills_the_columns_from_the_last_heartbeat(central_db_url: str) -> None:
    from alembic import command

    from cloud_bridge.migration import _alembic_config, migrate

    db = Database.from_url(central_db_url)
    try:
        cfg = _alembic_config()
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0009")
            hb = {"counts": {"queued": 4, "sent": 1}, "disk_free_bytes": 5, "oldest_pending_s": 60}
            conn.exec_driver_sql(
                "INSERT INTO gateways (id, first_seen, last_seen, state, last_heartbeat, "
                "heartbeat_at) VALUES ('old-1', '2026-11-01 00:00:00', '2026-11-01 00:00:00', "
                f"'online', '{json.dumps(hb)}', '2026-11-01 00:00:00')"
            )
        migrate(db.engine)
        with db.session() as s:
            g = s.get(Gateway, "old-1")
            assert g is not None and (g.backlog, g.disk_free_bytes) == (4 + 1, 5)
            assert g.pending_since == datetime(2026, 10, 31, 23, 59, tzinfo=UTC)
            assert g.replica_failing is False
    finally:
        db.dispose()


async def test_the_fleet_page_searches_filters_and_pages(bridge: Bridge) -> None:
    """/fleet on the paged list: counts, a search, a filter, the next page, clear refusals."""
    from tests.cloud_bridge.test_platform import Browser, make_user

    assert bridge.runner is not None
    now = datetime.now(UTC)

    def seed(s: Any) -> None:
        for i in range(1, 121):  # 120 gateways: 40 silent for an hour (critical), 80 fine
            heard = now - timedelta(hours=1) if i % 3 == 0 else now
            g = Gateway(id=f"ship-{i:03d}", first_seen=now, last_seen=now, state="online")
            hb = {"counts": {"queued": i}, "disk_free_bytes": 10 * GB, "version": "0.3.0"}
            g.last_heartbeat, g.heartbeat_at, g.version = hb, heard, "0.3.0"
            fleet.set_figures(g, hb, heard)
            s.add(g)

    await bridge.runner.async_tx(seed)
    url = bridge.admin_url
    async with aiohttp.ClientSession() as http:
        await make_user(http, url, "vera", "viewer")
    async with Browser(url) as b:
        await b.sign_in("vera")
        status, text = await b.get("/fleet")
        assert status == 200
        assert "120 gateways" in text and "1\u201350 of 120 gateways" in text
        assert text.count('data-gateway="') == 50
        first = text.index('data-gateway="ship-')
        assert 'class="critical" data-gateway="ship-003"' in text[first - 40 :]  # worst first
        assert 'data-count="critical"' in text and "</span> 40</a>" in text
        nxt = re.search(r'href="([^"]+)" rel="next"', text)
        assert nxt is not None
        status, text = await b.get(html.unescape(nxt.group(1)))
        assert status == 200 and "51\u2013100 of 120 gateways" in text and "First page" in text
        # a search and a filter, as the form sends them (empty fields are "any")
        status, text = await b.get("/fleet?q=ship-01&health=&state=online&version=&sort=id")
        assert status == 200 and "10 gateways matching" in text
        assert text.count('data-gateway="') == 10
        status, text = await b.get("/fleet?health=critical&q=ship-00")
        assert 'data-gateway="ship-003"' in text and "3 gateways matching" in text
        status, text = await b.get("/fleet?q=nothing-like-it")
        assert status == 200 and "No gateway matches these filters." in text
        for bad in ("/fleet?health=sick", "/fleet?sort=%3Cscript%3E", "/fleet?cursor=zz"):
            status, text = await b.get(bad)
            assert status == 400 and "<script>" not in text, bad
        status, text = await b.get("/fleet?from=99999999999999999999&q=ship")
        assert status == 200
