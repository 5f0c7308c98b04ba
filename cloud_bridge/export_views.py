"""``GET /api/v1/exports/{type}``: an activity type's records as CSV or ZIP, streamed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from cloud_bridge import audit
from cloud_bridge.access import ACTOR_KEY, Route
from cloud_bridge.app_keys import RUNNER_KEY
from cloud_bridge.blobs import BlobStore
from cloud_bridge.db import Database
from cloud_bridge.errors import bad_request
from cloud_bridge.exports import Exporter, parse_bound
from cloud_bridge.permissions import Action

logger = logging.getLogger(__name__)

EXPORTER_KEY = web.AppKey("exporter", Exporter)
FORMATS = ("csv", "zip")


def setup(app: web.Application, db: Database, blobs: BlobStore) -> None:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        exporter = Exporter(db, blobs)
        app[EXPORTER_KEY] = exporter
        yield
        await asyncio.to_thread(exporter.shutdown)

    app.cleanup_ctx.append(ctx)


async def get_export(request: web.Request) -> web.StreamResponse:
    q = request.query
    fmt = q.get("format", "csv")
    if fmt not in FORMATS:
        raise bad_request("format must be csv or zip.", "invalid_format")
    start = parse_bound("from", q.get("from"), end=False)
    end = parse_bound("to", q.get("to"), end=True)
    table = q.get("table") or None
    return await async_export(request, request.match_info["type"], fmt, table, start, end)


async def async_export(
    request: web.Request,
    type_name: str,
    fmt: str,
    table: str | None,
    start: datetime | None,
    end: datetime | None,
) -> web.StreamResponse:
    """Stream one export as the answer to ``request`` (the API and the Exports page).

    Every refusal (unknown type, table or range) is raised before the first byte.
    """
    exporter = request.app[EXPORTER_KEY]
    p = await asyncio.to_thread(exporter.plan, type_name, start, end)
    if table is not None:
        if fmt != "csv":
            raise bad_request("table= picks one CSV; the ZIP holds every table.", "invalid_table")
        if table not in p.tables:
            names = ", ".join(p.tables) or "none"
            raise bad_request(
                f"Activity type {type_name!r} has no table {table[:64]!r} (its tables: {names}).",
                "invalid_table",
            )
    name = f"{p.stem}-{table}.csv" if table else f"{p.stem}.{fmt}"
    await _async_audit(request, p.type_name, name, fmt, table, start, end)
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8" if fmt == "csv" else "application/zip",
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        }
    )
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    try:
        counts: dict[str, Any] = await exporter.async_stream(p, fmt, table, resp.write)
    except ConnectionError:
        logger.info("export %s: the client went away", name)
        return resp
    except Exception:
        # Headers are gone: cut the connection so the download shows as broken,
        # never as a complete file with rows missing.
        logger.exception("export %s failed part way", name)
        if request.transport is not None:
            request.transport.abort()
        return resp
    await resp.write_eof()
    logger.info("export %s: %s", name, ", ".join(f"{k} {v}" for k, v in counts.items()))
    return resp


async def _async_audit(
    request: web.Request,
    type_name: str,
    name: str,
    fmt: str,
    table: str | None,
    start: datetime | None,
    end: datetime | None,
) -> None:
    """Data leaves central: who took what, from where, before the first byte goes out."""
    actor = request[ACTOR_KEY]
    what = (
        f"table {table!r}"
        if table
        else ("every table and the files" if fmt == "zip" else "the records")
    )
    first = start.isoformat() if start else "the first record"
    last = (end - timedelta(microseconds=1)).isoformat() if end else "now"  # "to" is inclusive

    def work(s: Session) -> None:
        audit.record(
            s,
            actor,
            "export.download",
            "activity_type",
            type_name,
            f"exported {type_name!r} as {fmt.upper()}: {what}, {first} to {last} ({name})",
            format=fmt,
            table=table,
            start=start.isoformat() if start else None,
            before=end.isoformat() if end else None,
        )

    await request.app[RUNNER_KEY].async_tx(work)


ROUTES: list[Route] = [
    Route(
        "GET",
        "/api/v1/exports/{type}",
        get_export,
        "An activity type's records for a date range (?from=&to=, dates or times): "
        "format=csv (the records; table= for one child table) or format=zip (every table "
        "and the attachment files), streamed",
        Action.EXPORTS_READ,
    ),
]
