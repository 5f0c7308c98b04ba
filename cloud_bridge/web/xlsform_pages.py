"""The Activity types pages' XLSForm upload (``templates/xlsform_upload.html``).

A multipart form (CSRF as every page form) posts the .xlsx to ``/types`` (a new
type) or ``/types/{name}`` (its next version), where the JSON forms post too;
it goes through the same import as ``POST /api/v1/activity-types`` with the
spreadsheet's content type, and a refused workbook comes back on the page with
each problem by sheet, row and column.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.web_request import FileField

from cloud_bridge.app_keys import RUNNER_KEY
from cloud_bridge.errors import CentralError
from cloud_bridge.web import review_pages
from cloud_bridge.web.render import see_other
from cloud_bridge.xlsform import MAX_XLSX_BYTES
from cloud_bridge.xlsform_views import ImportRefused, import_xlsform


async def _refused(
    request: web.Request, into: str | None, message: str, problems: list[str], status: int
) -> web.Response:
    shown: dict[str, Any] = {"error": message, "status": status, "xlsform_problems": problems}
    if into is not None:
        try:
            return await review_pages.type_page(request, into, **shown)
        except CentralError:
            pass  # no such type (any more): the list page says it
    return await review_pages.types_page(request, **shown)


async def type_import(request: web.Request, into: str | None) -> web.StreamResponse:
    """Import the uploaded workbook as a new type, or ``into`` an existing one."""
    form = await request.post()
    name = into or str(form.get("name") or "").strip()[:64] or None
    offline = None if into else form.get("offline") == "1"
    if into is not None:  # a type's page imports into that type only, never a new one
        try:
            await request.app[RUNNER_KEY].async_tx(lambda s: review_pages.existing_type(s, into))
        except CentralError as exc:
            return await _refused(request, into, exc.message, [], exc.status)
    upload = form.get("xlsform")
    if not isinstance(upload, FileField):
        return await _refused(request, into, "Choose an .xlsx file to upload.", [], 400)
    data = upload.file.read(MAX_XLSX_BYTES + 1)
    try:
        body, _, _ = await import_xlsform(request, data, name=name, offline=offline)
    except ImportRefused as exc:
        problems = [str(p) for p in exc.problems]
        n = len(problems)
        message = (
            f"The XLSForm was not imported: {n} problem{'s' if n != 1 else ''} to fix, "
            "listed at the upload below."
        )
        return await _refused(request, into, message, problems, exc.status)
    except CentralError as exc:
        return await _refused(request, into, exc.message, [], exc.status)
    raise see_other(f"/types/{body['name']}", "imported")
