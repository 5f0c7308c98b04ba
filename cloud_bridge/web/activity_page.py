"""One activity's page: what it is, what can be done to it now, its whole timeline, its record.

The timeline merges what people did (the audit log: created, approved,
dispatched, recalled) with what the field sent (the envelope ledger: each
envelope with its three clocks, applied or rejected with code and reason,
and the check-in), oldest first.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud_bridge import audit, review, rules, views
from cloud_bridge.app_keys import BLOBS_KEY, RUNNER_KEY
from cloud_bridge.errors import CentralError
from cloud_bridge.models import (
    APPLIED,
    OFFLINE,
    ONLINE,
    ActivityType,
    Gateway,
    LedgerEntry,
)
from cloud_bridge.permissions import Action, Actor, may, owns
from cloud_bridge.web.render import HEADERS, page
from outpost.wire.schemas import SHA256_RE

# Image types a browser may show inline (anything else downloads).
MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


@dataclass
class Event:
    at: datetime
    kind: str  # created | approved | dispatched | envelope | checked_in | recalled | …
    title: str
    who: str | None = None
    css: str = ""
    entry: LedgerEntry | None = None
    details: dict[str, Any] = field(default_factory=dict)


AUDIT_KINDS = {
    "activity.create": "created",
    "activity.approve": "approved",
    "activity.dispatch": "dispatched",
    "activity.dispatch_undone": "dispatch undone",
    "activity.cancel": "recalled",
    "activity.update": "edited",
    "activity.review": "reviewed",
}


def timeline(s: Session, activity_id: str) -> list[Event]:
    events: list[Event] = []
    for e in audit.for_target(s, "activity", activity_id):
        kind = AUDIT_KINDS.get(e.action, e.action.split(".")[-1].replace("_", " "))
        events.append(Event(e.at, kind, e.summary, audit.who(e), details=e.details or {}))
    entries = list(
        s.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.activity_id == activity_id)
            .order_by(LedgerEntry.arrived_at, LedgerEntry.seq)
        )
    )
    for entry in entries:
        events.append(
            Event(
                entry.arrived_at,
                "envelope",
                f"envelope {entry.seq} ({entry.status}) from {entry.author} via {entry.gateway_id}",
                entry.author,
                css=entry.outcome,
                entry=entry,
            )
        )
        if entry.checked_in and entry.applied_at is not None:
            events.append(
                Event(
                    entry.applied_at,
                    "checked in",
                    f"checked in: back online after envelope {entry.seq} was applied",
                    css="applied",
                )
            )
    events.sort(key=lambda ev: ev.at)
    return events


def _fields_of(form: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in form.get("fields", []) if isinstance(f, dict)]


def label_of(f: dict[str, Any]) -> str:
    label = f.get("label")
    if isinstance(label, dict):
        label = label.get("en") or next(iter(label.values()), None)
    if isinstance(label, str) and label:
        return label
    return str(f.get("name", "")).replace("_", " ").capitalize()


async def activity_page(
    request: web.Request, *, error: str | None = None, status: int = 200
) -> web.Response:
    aid = request.match_info["activity_id"]
    actor = views.actor_of(request)

    def work(s: Session) -> dict[str, Any]:
        a = rules.get_activity(s, aid)
        views.check_own_activity(actor, a)
        t = s.get(ActivityType, a.type)
        record = rules.record_of(s, aid)
        gateways = list(s.scalars(select(Gateway.id).order_by(Gateway.id)))
        from cloud_bridge.people import sites_of

        return {
            "a": a,
            "form": t.form if t else {"fields": [], "tables": []},
            "type_offline": bool(t and t.offline),
            "record": record,
            "events": timeline(s, aid),
            "gateways": gateways,
            "responsible_sites": sorted(sites_of(s, a.responsible)),
            "review": review.reviews_of(s, aid),
        }

    data = await request.app[RUNNER_KEY].async_tx(work)
    a = data["a"]
    form = data["form"]
    fields = _fields_of(form)
    tables = [t for t in form.get("tables", []) if isinstance(t, dict)]
    missing = _still_missing(a, data["record"], data["type_offline"], data["responsible_sites"])
    return page(
        request,
        "activity.html",
        status,
        title=a.title,
        error=error,
        fields=fields,
        kinds={f.get("name"): f.get("type") for f in fields},
        tables={t.get("name"): [label_of(f) for f in t.get("fields", [])] for t in tables},
        table_fields={t.get("name"): [f.get("name") for f in t.get("fields", [])] for t in tables},
        label_of=label_of,
        missing=missing,
        applied=APPLIED,
        **_may_do(actor, a, data["record"]),
        **data,
    )


def _may_do(actor: Actor, a: Any, record: dict[str, Any]) -> dict[str, Any]:
    """The page's buttons: ``can`` (approve, dispatch, recall) and ``can_review``."""
    return {
        "can": {
            "approve": may(actor, Action.ACTIVITIES_APPROVE)
            and a.state == ONLINE
            and owns(actor, a.responsible)
            and a.approver != a.responsible,
            "dispatch": may(actor, Action.ACTIVITIES_DISPATCH) and a.state == ONLINE,
            "recall": may(actor, Action.ACTIVITIES_DISPATCH) and a.state in (ONLINE, OFFLINE),
        },
        "can_review": may(actor, Action.ACTIVITIES_REVIEW)
        and a.state == ONLINE
        and record.get("status") == "completed",
    }


def _still_missing(
    a: Any, record: dict[str, Any], type_offline: bool, sites: list[str]
) -> list[str]:
    """What stands between this activity and done, in plain words."""
    out = []
    if a.state == ONLINE and record.get("status") != "completed":
        if a.approver != a.responsible:
            out.append(f"approval by {a.responsible}, its responsible user (with their password)")
        if not type_offline:
            out.append(f"its type {a.type!r} may not go offline yet")
        if not sites:
            out.append(f"{a.responsible} works at no gateway yet (set their sites)")
        if a.approver == a.responsible:
            out.append("dispatch to a gateway")
    if a.state == OFFLINE and record.get("status") != "completed":
        out.append(f"the crew at {a.holder_gateway} to complete it and the gateway to send it")
    if record.get("missing_attachments"):
        n = len(record["missing_attachments"])
        out.append(f"{n} file{'s' if n != 1 else ''} the gateway has not sent yet")
    return out


def sniff(head: bytes) -> str | None:
    for magic, kind in MAGIC:
        if head.startswith(magic):
            return kind
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    return None


async def attachment(request: web.Request) -> web.StreamResponse:
    """A photo or signature for a page: an image type when it is one, else a download."""
    sha = request.match_info["sha256"]
    if not SHA256_RE.fullmatch(sha):
        raise CentralError("not_found", "There is no such file.", 404)
    actor = views.actor_of(request)
    allowed = await request.app[RUNNER_KEY].async_tx(
        lambda s: views.may_see_attachment(s, actor, sha)
    )
    if not allowed:
        raise CentralError("forbidden", "This file belongs to an activity that is not yours.", 403)
    path = request.app[BLOBS_KEY].path_of(sha)

    def head() -> bytes | None:
        try:
            with open(path, "rb") as fh:
                return fh.read(16)
        except FileNotFoundError:
            return None

    first = await asyncio.to_thread(head)
    if first is None:
        raise CentralError(
            "not_found", "Central does not hold this file yet; its gateway has not sent it.", 404
        )
    kind = sniff(first)
    headers = {**HEADERS, "Cache-Control": "private, max-age=86400"}
    if kind is None:
        headers["Content-Type"] = "application/octet-stream"
        headers["Content-Disposition"] = f'attachment; filename="{sha[:12]}.bin"'
    else:
        headers["Content-Type"] = kind
    return web.FileResponse(path, headers=headers)
