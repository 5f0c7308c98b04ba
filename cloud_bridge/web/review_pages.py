"""The review side of the platform's pages: activity types, rejections, exports, review.

Views gather and hand changes to the same functions the API uses; templates
render (``templates/types.html``, ``type.html``, ``form_preview.html``,
``rejections.html``, ``exports.html``, ``review_box.html``). Forms post back
and answer with a redirect (post/redirect/get): no page needs JavaScript.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.web_request import FileField
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud_bridge import rejection_list, review_views, views
from cloud_bridge.access import Route
from cloud_bridge.app_keys import RUNNER_KEY
from cloud_bridge.errors import CentralError
from cloud_bridge.export_views import async_export
from cloud_bridge.exports import parse_bound
from cloud_bridge.form_preview import preview
from cloud_bridge.models import Activity, ActivityType, ActivityTypeVersion, Record
from cloud_bridge.permissions import Action
from cloud_bridge.type_versions import version_json, versions
from cloud_bridge.web.render import page, see_other
from cloud_bridge.xlsform import MAX_XLSX_BYTES
from cloud_bridge.xlsform_views import ImportRefused, import_xlsform

logger = logging.getLogger(__name__)
A = Action

EXAMPLE_FORM = {
    "fields": [
        {"name": "site_ok", "type": "boolean", "required": True, "label": "Site is safe"},
        {"name": "notes", "type": "text"},
        {"name": "photo", "type": "attachment"},
    ],
    "tables": [
        {
            "name": "readings",
            "fields": [
                {"name": "meter", "type": "text", "required": True},
                {"name": "value", "type": "number"},
            ],
        }
    ],
}
MAX_FORM_TEXT = 256 * 1024
PAGE_SIZE = 50


async def _tx(request: web.Request, fn: Any) -> Any:
    return await request.app[RUNNER_KEY].async_tx(fn)


async def _form(request: web.Request) -> dict[str, str]:
    data = await request.post()
    return {k: str(v) for k, v in data.items() if isinstance(v, str)}


def _pretty(form: Any) -> str:
    return json.dumps(form, indent=2, ensure_ascii=False)


# --- activity types -------------------------------------------------------------------


def _types(s: Session) -> list[dict[str, Any]]:
    counts = dict(
        s.execute(
            select(ActivityTypeVersion.type_name, func.count()).group_by(
                ActivityTypeVersion.type_name
            )
        ).all()
    )
    return [
        {
            "name": t.name,
            "offline": t.offline,
            "form_version": t.form_version,
            "versions": counts.get(t.name, 1),
            "fields": len(t.form.get("fields", [])),
            "tables": [x["name"] for x in t.form.get("tables", [])],
            "updated_at": t.updated_at,
        }
        for t in s.scalars(select(ActivityType).order_by(ActivityType.name))
    ]


async def types_page(
    request: web.Request,
    *,
    error: str | None = None,
    draft: dict[str, Any] | None = None,
    status: int = 200,
    **extra: Any,
) -> web.Response:
    return page(
        request,
        "types.html",
        status,
        title="Activity types",
        types=await _tx(request, _types),
        error=error,
        draft=draft or {"name": "", "offline": True, "form": _pretty(EXAMPLE_FORM)},
        **extra,
    )


async def types_list(request: web.Request) -> web.Response:
    return await types_page(request)


def _parse_form_text(text: str) -> Any:
    if len(text) > MAX_FORM_TEXT:
        raise CentralError(
            "invalid_type", f"The form definition is over {MAX_FORM_TEXT // 1024} KiB.", 400
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CentralError(
            "invalid_json",
            f"The form definition is not valid JSON: {exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}.",
            400,
        ) from None


async def type_create(request: web.Request) -> web.StreamResponse:
    if request.content_type == "multipart/form-data":  # the XLSForm upload (type_import)
        return await type_import(request, None)
    form = await _form(request)
    name = form.get("name", "").strip()[:64]
    offline = form.get("offline") == "1"
    text = form.get("form", "")
    draft = {"name": name, "offline": offline, "form": text}
    try:
        data = {"name": name, "offline": offline, "form": _parse_form_text(text)}
        await _tx(request, lambda s: _new(s, name))
        await views.async_put_activity_type(request, data)
    except CentralError as exc:
        return await types_page(request, error=exc.message, draft=draft, status=exc.status)
    raise see_other(f"/types/{name}", "created")


async def type_page(
    request: web.Request,
    name: str | None = None,
    *,
    error: str | None = None,
    draft: str | None = None,
    status: int = 200,
    **extra: Any,
) -> web.Response:
    name = name or request.match_info["name"]
    raw = request.query.get("version", "")
    language = request.query.get("lang", "en")[:35]

    def work(s: Session) -> dict[str, Any]:
        t = s.get(ActivityType, name)
        if t is None:
            raise CentralError("not_found", f"No activity type {name!r} exists.", 404)
        kept = versions(s, name)
        shown = int(raw) if raw.isdigit() and len(raw) < 9 else t.form_version
        chosen = next((v for v in kept if v.form_version == shown), None)
        form = chosen.form if chosen is not None else t.form
        if chosen is None:
            shown = t.form_version
        return {
            "t": t,
            "versions": [version_json(v) for v in kept],
            "shown": shown,
            "shown_json": _pretty(form),
            "pv": preview(form, language),
        }

    data = await _tx(request, work)
    return page(
        request,
        "type.html",
        status,
        title=f"Activity type {name}",
        error=error,
        draft=draft if draft is not None else _pretty(data["t"].form),
        language=language,
        **data,
        **extra,
    )


async def type_view(request: web.Request) -> web.Response:
    return await type_page(request)


async def type_save(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if request.content_type == "multipart/form-data":  # its next version as an XLSForm
        return await type_import(request, name)
    form = await _form(request)
    text = form.get("form", "")
    try:
        data = {"name": name, "offline": form.get("offline") == "1", "form": _parse_form_text(text)}
        await _tx(request, lambda s: _existing(s, name))
        await views.async_put_activity_type(request, data)
    except CentralError as exc:
        return await type_page(request, name, error=exc.message, draft=text, status=exc.status)
    raise see_other(f"/types/{name}", "saved")


def _new(s: Session, name: str) -> None:
    if s.get(ActivityType, name) is not None:
        raise CentralError(
            "exists", f"An activity type {name!r} exists already: edit it on its page.", 409
        )


def _existing(s: Session, name: str) -> ActivityType:
    t = s.get(ActivityType, name)
    if t is None:
        raise CentralError("not_found", f"No activity type {name!r} exists.", 404)
    return t


existing_type = _existing


async def type_offline(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    form = await _form(request)
    t = await _tx(request, lambda s: _existing(s, name))
    data = {"name": name, "offline": form.get("offline") == "1", "form": t.form}
    try:
        await views.async_put_activity_type(request, data)
    except CentralError as exc:
        return await type_page(request, name, error=exc.message, status=exc.status)
    raise see_other(f"/types/{name}", "saved")


# --- rejections -------------------------------------------------------------------------


async def rejections_page(request: web.Request) -> web.Response:
    q = request.query
    gateway, code = q.get("gateway", "")[:64], q.get("code", "")[:64]
    still_open = q.get("open", "") == "1"
    query = {"gateway": gateway, "code": code, "open": still_open}
    before = q.get("before", "")[:36] or None
    mine = review_views.own_only(request)

    def work(s: Session) -> dict[str, Any]:
        return rejection_list.rejections(
            s,
            limit=PAGE_SIZE,
            before=before,
            gateway_id=gateway or None,
            code=code or None,
            still_open=still_open,
            mine=mine,
        )

    try:
        found = await _tx(request, work)
    except CentralError:  # a stale "before": start from the newest again
        before = None
        found = await _tx(request, work)
    keep = {k: v for k, v in (("gateway", gateway), ("code", code)) if v}
    if still_open:
        keep["open"] = "1"
    nxt = found["next"]
    return page(
        request,
        "rejections.html",
        title="Rejections",
        items=found["rejections"],
        next=nxt,
        next_query=urlencode({**keep, "before": nxt}) if nxt else "",
        query=query,
    )


# --- exports ------------------------------------------------------------------------------


def _export_types(s: Session) -> list[dict[str, Any]]:
    counts = dict(
        s.execute(
            select(Activity.type, func.count())
            .join(Record, Record.activity_id == Activity.id)
            .group_by(Activity.type)
        ).all()
    )
    return [
        {
            "name": t.name,
            "records": counts.get(t.name, 0),
            "tables": [x["name"] for x in t.form.get("tables", [])],
        }
        for t in s.scalars(select(ActivityType).order_by(ActivityType.name))
    ]


async def exports_page(
    request: web.Request, *, error: str | None = None, status: int = 200
) -> web.Response:
    return page(
        request,
        "exports.html",
        status,
        title="Exports",
        types=await _tx(request, _export_types),
        error=error,
        query=request.query,
    )


async def exports_index(request: web.Request) -> web.Response:
    return await exports_page(request)


async def exports_download(request: web.Request) -> web.StreamResponse:
    q = request.query
    what = q.get("what", "zip")
    fmt, table = ("zip", None) if what == "zip" else ("csv", None)
    if what.startswith("table:"):
        table = what.removeprefix("table:")[:64]
    try:
        start = parse_bound("from", q.get("from"), end=False)
        end = parse_bound("to", q.get("to"), end=True)
        return await async_export(request, q.get("type", "")[:64], fmt, table, start, end)
    except CentralError as exc:
        return await exports_page(request, error=exc.message, status=exc.status)


# --- review on the activity page --------------------------------------------------------


async def review_post(request: web.Request) -> web.StreamResponse:
    aid = request.match_info["activity_id"]
    form = await _form(request)
    state = form.get("state", "")
    note = form.get("note", "")[:2000] or None
    try:
        done = await review_views.async_review(request, aid, state, note)
    except CentralError as exc:
        from cloud_bridge.web.activity_page import activity_page

        return await activity_page(request, error=exc.message, status=exc.status)
    raise see_other(f"/activities/{aid}", "sent_back" if done["sent_to_gateway"] else "reviewed")


PAGES: list[Route] = [
    Route("GET", "/types", types_list, "Activity types", A.TYPES_READ, page=True),
    Route("POST", "/types", type_create, "Create an activity type", A.TYPES_WRITE, page=True),
    Route("GET", "/types/{name}", type_view, "One activity type", A.TYPES_READ, page=True),
    Route("POST", "/types/{name}", type_save, "Edit a form", A.TYPES_WRITE, page=True),
    Route(
        "POST", "/types/{name}/offline", type_offline, "Offline switch", A.TYPES_WRITE, page=True
    ),
    Route("GET", "/rejections", rejections_page, "Rejections", A.ACTIVITIES_READ, page=True),
    Route("GET", "/exports", exports_index, "Exports", A.EXPORTS_READ, page=True),
    Route("GET", "/exports/download", exports_download, "Download", A.EXPORTS_READ, page=True),
    Route(
        "POST",
        "/activities/{activity_id}/review",
        review_post,
        "Review an activity",
        A.ACTIVITIES_REVIEW,
        page=True,
    ),
]


# --- the Activity types pages' XLSForm upload (templates/xlsform_upload.html) -------
# A multipart form (CSRF as every page form) posts the .xlsx to /types (a new
# type) or /types/{name} (its next version), where the JSON forms post too; it
# goes through the same import as POST /api/v1/activity-types with the
# spreadsheet's content type, and a refused workbook comes back on the page
# with each problem by sheet, row and column.


async def _xlsform_refused(
    request: web.Request, into: str | None, message: str, problems: list[str], status: int
) -> web.Response:
    shown: dict[str, Any] = {"error": message, "status": status, "xlsform_problems": problems}
    if into is not None:
        try:
            return await type_page(request, into, **shown)
        except CentralError:
            pass  # no such type (any more): the list page says it
    return await types_page(request, **shown)


async def type_import(request: web.Request, into: str | None) -> web.StreamResponse:
    """Import the uploaded workbook as a new type, or ``into`` an existing one."""
    form = await request.post()
    name = into or str(form.get("name") or "").strip()[:64] or None
    offline = None if into else form.get("offline") == "1"
    if into is not None:  # a type's page imports into that type only, never a new one
        try:
            await request.app[RUNNER_KEY].async_tx(lambda s: existing_type(s, into))
        except CentralError as exc:
            return await _xlsform_refused(request, into, exc.message, [], exc.status)
    upload = form.get("xlsform")
    if not isinstance(upload, FileField):
        return await _xlsform_refused(request, into, "Choose an .xlsx file to upload.", [], 400)
    data = upload.file.read(MAX_XLSX_BYTES + 1)
    try:
        body, _, _ = await import_xlsform(
            request, data, name=name, offline=offline, put=views.async_put_activity_type
        )
    except ImportRefused as exc:
        problems = [str(p) for p in exc.problems]
        n = len(problems)
        message = (
            f"The XLSForm was not imported: {n} problem{'s' if n != 1 else ''} to fix, "
            "listed at the upload below."
        )
        return await _xlsform_refused(request, into, message, problems, exc.status)
    except CentralError as exc:
        return await _xlsform_refused(request, into, exc.message, [], exc.status)
    raise see_other(f"/types/{body['name']}", "imported")
