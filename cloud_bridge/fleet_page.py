"""The fleet page on the admin port: server-rendered HTML, no scripts, no CDN.

- ``GET /fleet`` — one row per gateway, worst first: a health badge, the
  reasons, state, when it was last heard, backlog, disk, replica, certificate
  and version. It reloads itself every ``fleet.page_refresh_s`` (a meta
  refresh: no JavaScript at all).
- ``GET /fleet/gateways/{id}`` — one gateway: every figure with when it was
  heard, the reasons, and its recent history (heartbeats and state changes).
- ``POST /fleet/login`` / ``POST /fleet/logout``.

Auth: a browser cannot send the admin API's bearer header, so the page asks
for the admin token once, in a login form, and answers with a session cookie
(``HttpOnly; SameSite=Strict; Path=/fleet``, ``Secure`` over HTTPS) that
holds an expiry and an HMAC of it keyed by the token — never the token
itself. Changing the admin token ends every session. Nothing secret is
logged; a failed login is logged with the client's address only.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
import time
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from cloud_bridge import fleet
from cloud_bridge.admin import FLEET_KEY, MQTT_KEY, RUNNER_KEY, TOKEN_KEY
from cloud_bridge.models import Gateway, utcnow

logger = logging.getLogger(__name__)

COOKIE = "outpost_fleet"
SESSION_S = 12 * 3600
HISTORY_ROWS = 60
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


# --- session cookie -------------------------------------------------------------------


def _sign(token: str, expires: int) -> str:
    return hmac.new(token.encode(), f"outpost-fleet:{expires}".encode(), hashlib.sha256).hexdigest()


def session_value(token: str, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + SESSION_S)
    return f"{expires}.{_sign(token, expires)}"


def valid_session(token: str, value: str | None, now: float | None = None) -> bool:
    if not value:
        return False
    expires_s, _, sig = value.partition(".")
    if not expires_s.isdigit():
        return False
    expires = int(expires_s)
    if expires < (now if now is not None else time.time()):
        return False
    return hmac.compare_digest(sig, _sign(token, expires))


def logged_in(request: web.Request) -> bool:
    return valid_session(request.app[TOKEN_KEY], request.cookies.get(COOKIE))


# --- formatting ---------------------------------------------------------------------------

e = html.escape


def when(value: str | datetime | None) -> str:
    parsed = value if isinstance(value, datetime) else fleet.parse_time(value)
    return parsed.strftime("%Y-%m-%d %H:%M:%S UTC") if parsed else "never"


def ago(seconds: float | None) -> str:
    return "never" if seconds is None else f"{fleet.duration(seconds)} ago"


def _dash(value: Any) -> str:
    return '<span class="muted">—</span>' if value is None else e(str(value))


def fmt(name: str, value: Any) -> str:
    """One figure for a person (HTML-escaped)."""
    if value is None:
        return _dash(None)
    if name in ("disk_free_bytes", "db_bytes", "attachments_to_upload_bytes"):
        return e(fleet.size(float(value)))
    if name in ("uptime_s", "oldest_pending_s", "replica_lag_s"):
        return e(fleet.duration(float(value)))
    if name in ("last_sync", "cert_expires_at"):
        return e(when(value))
    if name == "counts" and isinstance(value, dict):
        return e(", ".join(f"{k} {v}" for k, v in value.items() if v) or "none")
    return e(str(value))


def badge(level: str) -> str:
    return f'<span class="badge {e(level)}">{e(level.upper())}</span>'


def page(title: str, body: str, refresh_s: int | None = None) -> str:
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{refresh}<link rel="icon" href="data:,">
<title>{e(title)}</title>
<style>{STYLE}</style></head>
<body>{body}</body></html>"""


STYLE = """
:root { color-scheme: light; --ok: #1b7f3b; --warn: #a86400; --crit: #b3261e; --muted: #666; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #1d1d1f; background: #f6f7f9; }
header { display: flex; align-items: baseline; gap: 1.2rem; padding: .8rem 1.5rem;
         background: #1f2937; color: #fff; flex-wrap: wrap; }
header h1 { font-size: 1.2rem; margin: 0; }
header a { color: #cbd5e1; }
header form { margin-left: auto; }
main { padding: 1rem 1.5rem 2rem; }
.summary { display: flex; gap: .8rem; margin: .2rem 0 1rem; flex-wrap: wrap; align-items: center; }
.summary .count { font-size: 1.05rem; }
table { border-collapse: collapse; width: 100%; background: #fff;
        box-shadow: 0 1px 2px rgba(0,0,0,.08); }
th, td { text-align: left; padding: .45rem .6rem; border-bottom: 1px solid #e5e7eb;
         vertical-align: top; }
th { font-size: .8rem; text-transform: uppercase; letter-spacing: .03em; color: #444;
     background: #f1f3f5; }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
td.gw { white-space: nowrap; font-weight: 600; }
tbody th { text-transform: none; letter-spacing: 0; font-size: .95rem; font-weight: 600;
           color: #1d1d1f; background: #fafafa; width: 16rem; }
tr.critical td:first-child { border-left: 5px solid var(--crit); }
tr.warn td:first-child { border-left: 5px solid var(--warn); }
tr.ok td:first-child { border-left: 5px solid var(--ok); }
.badge { display: inline-block; min-width: 5.2em; text-align: center; padding: .12rem .45rem;
         border-radius: .3rem; font-weight: 700; font-size: .8rem; color: #fff; }
.badge.ok { background: var(--ok); } .badge.warn { background: var(--warn); }
.badge.critical { background: var(--crit); }
.state-online { color: var(--ok); font-weight: 600; }
.state-offline { color: var(--crit); font-weight: 600; }
.state-unknown { color: var(--muted); font-weight: 600; }
.muted, .heard { color: var(--muted); font-size: .85em; }
.stale { color: var(--warn); }
ul.reasons { margin: 0; padding-left: 1.1rem; }
ul.reasons li.critical { color: var(--crit); } ul.reasons li.warn { color: var(--warn); }
a { color: #1d4ed8; }
.card { background: #fff; padding: 1rem 1.2rem; margin-bottom: 1rem;
        box-shadow: 0 1px 2px rgba(0,0,0,.08); }
.login { max-width: 26rem; margin: 4rem auto; }
.login input { width: 100%; font: inherit; padding: .5rem; margin: .3rem 0 .8rem; }
button { font: inherit; padding: .4rem .9rem; cursor: pointer; }
.error { color: var(--crit); font-weight: 600; }
.banner { margin: 0; padding: .6rem 1.5rem; background: #fde8e6; color: var(--crit);
          font-weight: 600; border-bottom: 1px solid #f3b7b1; }
svg.spark { background: #fafafa; border: 1px solid #e5e7eb; }
"""


def _header(request: web.Request) -> str:
    return (
        '<header><h1>Outpost fleet</h1><a href="/fleet">All gateways</a>'
        '<form method="post" action="/fleet/logout"><button type="submit">Sign out</button>'
        "</form></header>" + _broker_banner(request)
    )


def _broker_banner(request: web.Request) -> str:
    """While central itself cannot reach the broker, every figure is old news."""
    if request.app[MQTT_KEY].connected:
        return ""
    return (
        '<p class="banner" role="status">Central is not connected to the MQTT broker: '
        "it hears no gateway now, so every figure here is as last heard.</p>"
    )


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", headers=HEADERS)


# --- login ------------------------------------------------------------------------------


def login_page(error: str | None = None) -> str:
    problem = f'<p class="error" role="alert">{e(error)}</p>' if error else ""
    return page(
        "Outpost fleet — sign in",
        f"""<main><div class="card login"><h1>Outpost fleet</h1>
<p>Sign in with the bridge's admin token (<code>[admin] token</code>, or the
<code>admin-token</code> file in the bridge's data directory).</p>{problem}
<form method="post" action="/fleet/login">
<label for="token">Admin token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button></form></div></main>""",
    )


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    given = str(form.get("token", "")).strip()
    token = request.app[TOKEN_KEY]
    if not hmac.compare_digest(given.encode(), token.encode()):
        logger.warning("fleet page: a sign-in with a wrong token from %s", request.remote)
        return _html(login_page("That is not the admin token."), 401)
    response = web.HTTPSeeOther("/fleet", headers=HEADERS)
    response.set_cookie(
        COOKIE,
        session_value(token),
        max_age=SESSION_S,
        path="/fleet",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    raise response


async def logout(request: web.Request) -> web.Response:
    response = web.HTTPSeeOther("/fleet", headers=HEADERS)
    response.del_cookie(COOKIE, path="/fleet")
    raise response


# --- the fleet ----------------------------------------------------------------------------


def _stale(v: dict[str, Any], t: fleet.Thresholds) -> bool:
    return v["heartbeat_at"] is None or v["silent_s"] >= t.silent_warn_s


def _reasons(v: dict[str, Any]) -> str:
    if not v["reasons"]:
        return '<span class="muted">All figures within thresholds.</span>'
    items = "".join(f'<li class="{e(r["level"])}">{e(r["message"])}</li>' for r in v["reasons"])
    return f'<ul class="reasons">{items}</ul>'


def _state(v: dict[str, Any], now_s: float | None = None) -> str:
    age = v["figures"]["state"]["age_s"]
    since = f'<div class="heard">since {e(ago(age))}</div>' if age is not None else ""
    return f'<span class="state-{e(v["state"])}">{e(v["state"])}</span>{since}'


def fleet_table(views: list[dict[str, Any]], t: fleet.Thresholds) -> str:
    if not views:
        return '<p class="card">No gateway has connected yet.</p>'
    rows = []
    for v in views:
        stale = _stale(v, t)
        heard = ago(v["silent_s"]) if v["heartbeat_at"] else "never"
        heard_cls = "num stale" if stale else "num"
        figure_note = (
            f'<div class="heard">as heard {e(ago(v["silent_s"]))}</div>'
            if stale and v["heartbeat_at"]
            else ""
        )
        backlog = "—" if v["backlog"] is None else str(v["backlog"])
        oldest = ""
        if v["oldest_pending_now_s"] is not None:
            bound = "≥ " if v["oldest_pending_is_lower_bound"] else ""
            oldest = (
                f'<div class="heard">oldest {e(bound)}'
                f"{e(fleet.duration(v['oldest_pending_now_s']))}</div>"
            )
        expires = fleet.parse_time(v["cert_expires_at"])
        cert = e(f"{expires:%Y-%m-%d}") if expires else _dash(None)
        rows.append(
            f'<tr class="{e(v["health"])}" data-gateway="{e(v["id"])}">'
            f"<td>{badge(v['health'])}</td>"
            f'<td class="gw"><a href="/fleet/gateways/{e(v["id"])}">{e(v["id"])}</a></td>'
            f"<td>{_state(v)}</td>"
            f'<td class="{heard_cls}">{e(heard)}</td>'
            f'<td class="num">{e(backlog)}{oldest}{figure_note}</td>'
            f'<td class="num">{fmt("disk_free_bytes", v["disk_free_bytes"])}</td>'
            f'<td class="num">{fmt("replica_lag_s", v["replica_lag_s"])}</td>'
            f'<td class="num">{cert}</td>'
            f"<td>{_dash(v['version'])}</td>"
            f"<td>{_reasons(v)}</td></tr>"
        )
    return (
        "<table><thead><tr><th>Health</th><th>Gateway</th><th>State</th><th>Last heard</th>"
        "<th>Backlog</th><th>Disk free</th><th>Replica lag</th><th>Cert expires</th>"
        "<th>Version</th><th>Reasons</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _order(v: dict[str, Any]) -> tuple[int, str]:
    return (-fleet.LEVELS.index(v["health"]), v["id"])


async def fleet_index(request: web.Request) -> web.Response:
    if not logged_in(request):
        return _html(login_page())
    cfg = request.app[FLEET_KEY]
    t = fleet.Thresholds.from_config(cfg)
    views = sorted(
        await request.app[RUNNER_KEY].async_tx(lambda s: fleet.all_views(s, t)), key=_order
    )
    counts = {level: sum(1 for v in views if v["health"] == level) for level in fleet.LEVELS}
    summary = " ".join(
        f'<span class="count">{badge(level)} {counts[level]}</span>'
        for level in reversed(fleet.LEVELS)
    )
    body = (
        _header(request)
        + f'<main><div class="summary"><strong>{len(views)} gateways</strong> {summary}'
        f'<span class="muted">Updated {e(when(utcnow()))}; refreshes every '
        f"{cfg.page_refresh_s} s.</span></div>{fleet_table(views, t)}</main>"
    )
    return _html(page("Outpost fleet", body, cfg.page_refresh_s))


# --- one gateway ------------------------------------------------------------------------

FIGURE_LABELS = {
    "state": "State",
    "version": "Version",
    "uptime_s": "Uptime",
    "counts": "Envelopes by state",
    "backlog": "Backlog (queued + sent)",
    "oldest_pending_s": "Oldest pending (as heard)",
    "rejected": "Rejected envelopes",
    "disk_free_bytes": "Disk free",
    "db_bytes": "Database size",
    "replica_lag_s": "Replica lag",
    "replica_error": "Replica error",
    "devices": "Signed-in devices",
    "last_sync": "Last sync with central",
    "cert_expires_at": "Certificate expires",
    "attachments_to_upload": "Files waiting to go up",
    "attachments_to_upload_bytes": "Size of files waiting",
    "last_error": "Last uplink problem",
}


def figures_table(v: dict[str, Any]) -> str:
    rows = []
    for name, label in FIGURE_LABELS.items():
        f = v["figures"][name]
        heard = f'{e(when(f["heard_at"]))} <span class="heard">({e(ago(f["age_s"]))})</span>'
        rows.append(
            f"<tr><th scope=row>{e(label)}</th><td>{fmt(name, f['value'])}</td>"
            f"<td>{heard if f['heard_at'] else _dash(None)}</td></tr>"
        )
    return (
        "<table><thead><tr><th>Figure</th><th>Value</th><th>Heard</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def sparkline(points: list[tuple[float, float]], label: str, width: int = 560) -> str:
    """An inline SVG line of ``(t, value)`` points, oldest left."""
    height = 60
    if len(points) < 2:
        return ""
    t0, t1 = points[0][0], points[-1][0]
    top = max(p[1] for p in points) or 1.0
    span = (t1 - t0) or 1.0
    coords = " ".join(
        f"{(t - t0) / span * (width - 4) + 2:.1f},{height - 2 - v / top * (height - 4):.1f}"
        for t, v in points
    )
    return (
        f'<figure><figcaption>{e(label)} <span class="muted">(max {e(f"{top:g}")})'
        f'</span></figcaption><svg class="spark" width="{width}" height="{height}" '
        f'role="img" aria-label="{e(label)}"><polyline fill="none" stroke="#1d4ed8" '
        f'stroke-width="1.5" points="{coords}"/></svg></figure>'
    )


def history_section(history: list[dict[str, Any]]) -> str:
    if not history:
        return "<p class=muted>No history kept yet.</p>"
    beats = [h for h in reversed(history) if h["kind"] == "heartbeat" and h["data"]]
    charts = ""
    if beats:
        stamp = [(fleet.parse_time(h["at"]) or utcnow()).timestamp() for h in beats]
        backlog_pts = [
            (s, float(fleet.backlog(h["data"]) or 0)) for s, h in zip(stamp, beats, strict=True)
        ]
        disk_pts = [
            (s, float(h["data"].get("disk_free_bytes", 0)) / fleet.MB)
            for s, h in zip(stamp, beats, strict=True)
        ]
        charts = sparkline(backlog_pts, "Backlog") + sparkline(disk_pts, "Disk free (MiB)")
    rows = []
    for h in history[:HISTORY_ROWS]:
        d = h["data"] or {}
        if h["kind"] == "heartbeat":
            cells = (
                f'<td class="num">{_dash(fleet.backlog(d))}</td>'
                f'<td class="num">{fmt("oldest_pending_s", d.get("oldest_pending_s"))}</td>'
                f'<td class="num">{fmt("disk_free_bytes", d.get("disk_free_bytes"))}</td>'
                f'<td class="num">{fmt("replica_lag_s", d.get("replica_lag_s"))}</td>'
                f'<td class="num">{_dash(d.get("devices"))}</td>'
            )
        else:
            cells = f'<td colspan="5"><span class="state-{e(h["kind"])}">{e(h["kind"])}</span></td>'
        rows.append(
            f'<tr><td class="num">{e(when(h["at"]))}</td><td>{e(h["kind"])}</td>{cells}</tr>'
        )
    return (
        charts
        + "<table><thead><tr><th>Heard</th><th>What</th><th>Backlog</th><th>Oldest pending</th>"
        "<th>Disk free</th><th>Replica lag</th><th>Devices</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


async def gateway_page(request: web.Request) -> web.Response:
    if not logged_in(request):
        return _html(login_page())
    gid = request.match_info["gateway_id"]
    cfg = request.app[FLEET_KEY]
    t = fleet.Thresholds.from_config(cfg)

    def work(s: Session) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        g = s.get(Gateway, gid)
        if g is None:
            return None
        history = [fleet.history_json(h) for h in fleet.recent_history(s, gid, 500)]
        return fleet.gateway_view(g, utcnow(), t), history

    found = await request.app[RUNNER_KEY].async_tx(work)
    if found is None:
        body = (
            _header(request)
            + f'<main><p class="card">No gateway {e(repr(gid))} has been seen.</p></main>'
        )
        return _html(page("Outpost fleet — unknown gateway", body), 404)
    v, history = found
    body = (
        _header(request)
        + f'<main><div class="summary"><h2 style="margin:0">{e(v["id"])}</h2>{badge(v["health"])}'
        f"{_state(v)}<span class=muted>first seen {e(when(v['first_seen']))}; last heartbeat "
        f"{e(ago(v['silent_s']) if v['heartbeat_at'] else 'never')}; history kept "
        f"{cfg.history_days} days; refreshes every {cfg.page_refresh_s} s.</span></div>"
        f'<div class="card"><h3>Health</h3>{_reasons(v)}</div>'
        f'<div class="card"><h3>Figures, with when central last heard each</h3>'
        f"{figures_table(v)}</div>"
        f'<div class="card"><h3>Recent history</h3>{history_section(history)}</div></main>'
    )
    return _html(page(f"Outpost fleet — {v['id']}", body, cfg.page_refresh_s))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/fleet", fleet_index)
    app.router.add_post("/fleet/login", login)
    app.router.add_post("/fleet/logout", logout)
    app.router.add_get("/fleet/gateways/{gateway_id}", gateway_page)
