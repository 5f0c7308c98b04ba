"""XLSForm upload: ``POST /api/v1/activity-types`` with an .xlsx body, and the page's upload.

Both read the workbook with :mod:`cloud_bridge.xlsform` in a worker thread (one
at a time: openpyxl and pyxform are CPU work on a 2-core box) and store it
through :func:`cloud_bridge.views.async_put_activity_type`, the same path as a
JSON definition: one transaction, a new kept version when the form changed.
A refused workbook answers 400 (413 when too large) with every problem by
sheet, row and column in ``error.problems``.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from cloud_bridge.app_keys import RUNNER_KEY
from cloud_bridge.errors import CentralError
from cloud_bridge.models import ActivityType
from cloud_bridge.xlsform import (
    MAX_XLSX_BYTES,
    XLSX_CONTENT_TYPE,
    Imported,
    Problem,
    XlsformError,
    read_xlsform,
)
from outpost.forms import NAME_PATTERN

_NAME = re.compile(NAME_PATTERN)
# One workbook read at a time (CPU work on a 2-core box); a lock, not an asyncio
# semaphore, so it binds to no event loop.
_ONE_AT_A_TIME = threading.Lock()


def _read_one(data: bytes) -> Imported:
    with _ONE_AT_A_TIME:
        return read_xlsform(data)


_FLAGS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class ImportRefused(CentralError):
    """A refused workbook: the message and each problem, by sheet, row and column."""

    def __init__(self, problems: list[Problem], status: int = 400) -> None:
        self.problems = problems
        code = "xlsform_too_large" if status == 413 else "invalid_xlsform"
        text = "; ".join(str(p) for p in problems)
        super().__init__(code, f"The XLSForm was not imported: {text}.", status)

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = super().as_json()
        body["error"]["problems"] = [p.as_json() for p in self.problems]
        return body


def is_xlsform(request: web.Request) -> bool:
    return request.content_type == XLSX_CONTENT_TYPE


async def parse_upload(data: bytes) -> Imported:
    """The workbook's form, read off the event loop; :class:`ImportRefused` when refused."""
    if len(data) > MAX_XLSX_BYTES:
        raise ImportRefused(
            [
                Problem(
                    f"The spreadsheet is over {MAX_XLSX_BYTES // 1024} KiB; an XLSForm is far less."
                )
            ],
            413,
        )
    try:
        return await asyncio.to_thread(_read_one, data)
    except XlsformError as exc:
        raise ImportRefused(exc.problems) from None


def type_name(imported: Imported, given: str | None) -> str:
    """The activity type: the one named, else the settings sheet's form_id."""
    name = (given or "").strip() or imported.form_id
    if not name:
        raise ImportRefused(
            [
                Problem(
                    "no form_id: give the workbook a settings sheet with a form_id, "
                    "or name the activity type",
                    "settings",
                    2,
                    "form_id",
                )
            ]
        )
    if not _NAME.fullmatch(name):
        where = ("settings", 2, "form_id") if not given else (None, None, None)
        raise ImportRefused(
            [
                Problem(
                    f"the activity type name {name[:64]!r} must start with a lowercase letter and "
                    "hold only lowercase letters, digits and _ (at most 63)",
                    *where,
                )
            ]
        )
    return name


# How an activity type is stored as the caller: ``views.async_put_activity_type``,
# handed in by the callers (views imports this module, not the other way round).
PutType = Callable[..., Awaitable[tuple[dict[str, Any], bool]]]


async def import_xlsform(
    request: web.Request,
    data: bytes,
    *,
    name: str | None,
    offline: bool | None,
    put: PutType,
) -> tuple[dict[str, Any], bool, Imported]:
    """Read, check and store (with ``put``) the workbook as the caller.

    Returns (type JSON, created, what was read).
    """
    imported = await parse_upload(data)
    chosen = type_name(imported, name)

    def current_offline(s: Session) -> bool:
        t = s.get(ActivityType, chosen)
        return bool(t.offline) if t is not None else False

    if offline is None:  # a new version keeps its type's offline switch
        offline = await request.app[RUNNER_KEY].async_tx(current_offline)
    body, created = await put(
        request,
        {"name": chosen, "offline": offline, "form": imported.form},
        source="xlsform",
        xlsform_form_id=imported.form_id,
        xlsform_version=imported.version,
    )
    return body, created, imported


def upload_query(request: web.Request) -> tuple[str | None, bool | None]:
    """``?name=`` and ``?offline=``: an XLSForm upload's (a JSON body carries its own)."""
    query = request.query
    unknown = sorted(set(query) - {"name", "offline"})
    if unknown:
        raise CentralError("invalid_query", f"Unknown query parameter {unknown[0][:64]!r}.", 400)
    raw_offline = query.get("offline")
    offline = None
    if raw_offline is not None:
        offline = _FLAGS.get(raw_offline)
        if offline is None:
            raise CentralError("invalid_query", "offline must be true or false.", 400)
    name = query.get("name")
    if name is not None and not _NAME.fullmatch(name):
        raise CentralError(
            "invalid_query",
            "name must start with a lowercase letter and hold only lowercase letters, "
            "digits and _ (at most 63).",
            400,
        )
    if (name is not None or offline is not None) and not is_xlsform(request):
        raise CentralError(
            "invalid_query",
            "name and offline in the query go with an XLSForm body; a JSON body carries them.",
            400,
        )
    return name, offline


async def post_xlsform(request: web.Request, put: PutType) -> web.Response:
    name, offline = upload_query(request)
    data = await request.read()
    try:
        body, created, imported = await import_xlsform(
            request, data, name=name, offline=offline, put=put
        )
    except ImportRefused as exc:
        return web.json_response(exc.as_json(), status=exc.status)
    body["xlsform"] = {
        "form_id": imported.form_id,
        "title": imported.title,
        "version": imported.version,
        "warnings": imported.warnings[:20],
    }
    return web.json_response(body, status=201 if created else 200)
