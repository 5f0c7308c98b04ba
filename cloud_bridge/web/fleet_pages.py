"""The fleet pages, on the platform's layout and sign-in (``fleet.read``: admin, dispatcher, viewer).

- ``GET /fleet`` — the fleet's counts by health (each a link to those
  gateways), a search and filters (a GET form: no JavaScript), then one page
  of ``PAGE_SIZE`` gateways, worst first unless sorted otherwise: health,
  reasons, state, when last heard, backlog, disk, replica, certificate,
  version; a link to the next page (keyset, ``cloud_bridge.fleet_query``).
  It reloads itself every ``fleet.page_refresh_s`` (a meta refresh).
- ``GET /fleet/gateways/{id}`` — one gateway: every figure with when it was
  heard, the reasons, and its recent history (heartbeats and state changes).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from sqlalchemy.orm import Session

from cloud_bridge import fleet, fleet_query
from cloud_bridge.access import Route
from cloud_bridge.app_keys import FLEET_KEY, MQTT_KEY, RUNNER_KEY
from cloud_bridge.errors import CentralError
from cloud_bridge.models import Gateway, utcnow
from cloud_bridge.permissions import Action
from cloud_bridge.web.render import error_page, page, when

HISTORY_ROWS = 60

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
    "last_error": "Last dropped message",
}


def fmt(name: str, value: Any) -> str | None:
    """One figure for a person (the template escapes it); None shows a dash."""
    if value is None:
        return None
    if name in ("disk_free_bytes", "db_bytes", "attachments_to_upload_bytes"):
        return fleet.size(float(value))
    if name in ("uptime_s", "oldest_pending_s", "replica_lag_s"):
        return fleet.duration(float(value))
    if name in ("last_sync", "cert_expires_at"):
        return when(value)
    if name == "counts" and isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items() if v) or "none"
    return str(value)


def sparkline(points: list[tuple[float, float]], width: int = 560) -> dict[str, Any] | None:
    """An SVG polyline of ``(t, value)`` points, oldest left (the template draws it)."""
    height = 60
    if len(points) < 2:
        return None
    t0, t1 = points[0][0], points[-1][0]
    top = max(p[1] for p in points) or 1.0
    span = (t1 - t0) or 1.0
    coords = " ".join(
        f"{(t - t0) / span * (width - 4) + 2:.1f},{height - 2 - v / top * (height - 4):.1f}"
        for t, v in points
    )
    return {"points": coords, "top": f"{top:g}", "width": width, "height": height}


PAGE_SIZE = 50
PAGE_PARAMS = ("q", "health", "state", "version", "sort", "cursor")
SORT_LABELS = {
    "health": "worst first",
    "last_heard": "longest silent first",
    "backlog": "largest backlog first",
    "id": "name",
    "version": "version",
    "state": "state",
}


def _row(v: dict[str, Any], t: fleet.Thresholds) -> dict[str, Any]:
    stale = v["heartbeat_at"] is None or v["silent_s"] >= t.silent_warn_s
    expires = fleet.parse_time(v["cert_expires_at"])
    return {
        "v": v,
        "stale": stale,
        "heard": fleet.duration(v["silent_s"]) + " ago" if v["heartbeat_at"] else "never",
        "oldest": (
            ("≥ " if v["oldest_pending_is_lower_bound"] else "")
            + fleet.duration(v["oldest_pending_now_s"])
            if v["oldest_pending_now_s"] is not None
            else None
        ),
        "cert": f"{expires:%Y-%m-%d}" if expires else None,
        "disk": fmt("disk_free_bytes", v["disk_free_bytes"]),
        "lag": fmt("replica_lag_s", v["replica_lag_s"]),
    }


def _link(params: dict[str, str], **over: str | None) -> str:
    """``/fleet`` with ``params`` changed by ``over`` (None drops a key)."""
    merged = {k: v for k, v in {**params, **over}.items() if v}
    return "/fleet" + ("?" + urlencode(merged) if merged else "")


async def fleet_index(request: web.Request) -> web.Response:
    """One page of the fleet (``fleet_query``): counts, search, filters, the page, the next link."""
    cfg = request.app[FLEET_KEY]
    t = fleet.Thresholds.from_config(cfg)
    # A form sends empty fields for "any"; the page takes only its own parameters.
    params = {k: request.query[k].strip() for k in PAGE_PARAMS if request.query.get(k, "").strip()}
    try:
        fq = fleet_query.parse({**params, "limit": str(PAGE_SIZE)})
        first = int(request.query.get("from", "1"))  # the first row's number, for "51 to 100 of"
    except CentralError as exc:
        return error_page(request, 400, exc.message)
    except ValueError:
        first = 1
    now = utcnow()

    def work(s: Session) -> tuple[dict[str, Any], fleet_query.Page]:
        whole = fleet_query.summary(s, fleet_query.FleetQuery(), t, now, reasons=False)
        return whole, fleet_query.page(s, fq, t, now)

    whole, got = await request.app[RUNNER_KEY].async_tx(work)
    first = max(1, min(first, max(got.total, 1))) if fq.after else 1
    shown = len(got.views)
    base = {k: v for k, v in params.items() if k != "cursor"}
    return page(
        request,
        "fleet.html",
        title="Fleet",
        rows=[_row(v, t) for v in got.views],
        summary=whole,
        total=got.total,
        first=first,
        last=first + shown - 1,
        filtered=fq.filtered,
        params={k: base.get(k, "") for k in PAGE_PARAMS},
        sorts=SORT_LABELS,
        levels=list(reversed(fleet.LEVELS)),
        states=fleet_query.STATES,
        next_link=(
            _link(base, cursor=got.next_cursor, **{"from": str(first + shown)})
            if got.next_cursor
            else None
        ),
        first_link=_link(base) if fq.after else None,
        level_link=lambda level: _link({}, health=level),
        updated=now,
        refresh_s=cfg.page_refresh_s,
        broker_connected=request.app[MQTT_KEY].connected,
    )


async def gateway_page(request: web.Request) -> web.Response:
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
        return error_page(request, 404, f"No gateway {gid!r} has been seen.")
    v, history = found
    figures = [
        {
            "label": label,
            "value": fmt(name, v["figures"][name]["value"]),
            "heard_at": v["figures"][name]["heard_at"],
            "age_s": v["figures"][name]["age_s"],
        }
        for name, label in FIGURE_LABELS.items()
    ]
    return page(
        request,
        "gateway.html",
        title=f"Gateway {v['id']}",
        v=v,
        figures=figures,
        charts=_charts(history),
        history=[_history_row(h) for h in history[:HISTORY_ROWS]],
        history_days=cfg.history_days,
        refresh_s=cfg.page_refresh_s,
        broker_connected=request.app[MQTT_KEY].connected,
        heard=fleet.duration(v["silent_s"]) + " ago" if v["heartbeat_at"] else "never",
        duration=fleet.duration,
    )


def _charts(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sparklines of the backlog and the free disk over the heartbeats, oldest first."""
    beats = [h for h in reversed(history) if h["kind"] == "heartbeat" and h["data"]]
    if not beats:
        return []
    stamp = [(fleet.parse_time(h["at"]) or utcnow()).timestamp() for h in beats]
    backlog = [(s, float(fleet.backlog(h["data"]) or 0)) for s, h in zip(stamp, beats, strict=True)]
    disk = [
        (s, float(h["data"].get("disk_free_bytes", 0)) / fleet.MB)
        for s, h in zip(stamp, beats, strict=True)
    ]
    charts = []
    for label, pts in (("Backlog", backlog), ("Disk free (MiB)", disk)):
        line = sparkline(pts)
        if line:
            charts.append({"label": label, **line})
    return charts


def _history_row(h: dict[str, Any]) -> dict[str, Any]:
    d = h["data"] or {}
    return {
        "at": h["at"],
        "kind": h["kind"],
        "backlog": fleet.backlog(d) if h["kind"] == "heartbeat" else None,
        "oldest": fmt("oldest_pending_s", d.get("oldest_pending_s")),
        "disk": fmt("disk_free_bytes", d.get("disk_free_bytes")),
        "lag": fmt("replica_lag_s", d.get("replica_lag_s")),
        "devices": d.get("devices"),
    }


PAGES: list[Route] = [
    Route("GET", "/fleet", fleet_index, "The fleet", Action.FLEET_READ, page=True),
    Route(
        "GET",
        "/fleet/gateways/{gateway_id}",
        gateway_page,
        "One gateway",
        Action.FLEET_READ,
        page=True,
    ),
]
