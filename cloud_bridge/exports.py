"""Exports of one activity type's records: CSV, or a ZIP with every table and the files.

``GET /api/v1/exports/{type}?from=&to=&format=csv|zip[&table=]``:

* ``records.csv``: one row per activity of the type whose record central
  applied in the range (``from`` inclusive, ``to`` inclusive of that day when a
  date), with the activity's columns and one column per form field (every
  field of every kept form version, current first);
* ``<table>.csv``: one per child table, joined by ``activity_id`` (and ``row``);
* the ZIP adds ``attachments/<sha256>[.jpg|.png|…]``: each file central holds.

Streamed: a producer thread reads the database with a server-side cursor (a
plain deferred read transaction on SQLite, so replay keeps writing) and
hands chunks of ~64 KiB to the response through a small bounded queue; memory
stays flat however many rows there are (``bench/export.py`` measures it).
Text cells that a spreadsheet would run as a formula (``= + - @``) get a
leading ``'``.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import threading
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from cloud_bridge.blobs import BlobStore
from cloud_bridge.db import Database
from cloud_bridge.errors import CentralError, bad_request
from cloud_bridge.models import (
    Activity,
    ActivityType,
    ActivityTypeVersion,
    Blob,
    Record,
    RecordRow,
)

logger = logging.getLogger(__name__)

CHUNK = 64 * 1024
QUEUE_CHUNKS = 8  # at most this many chunks wait between the thread and the socket
YIELD_PER = 500  # rows fetched from the cursor at a time
MAX_EXPORTS = 2  # exports running at once (each holds a thread and a DB connection)
RECORD_COLUMNS = (
    "activity_id",
    "title",
    "responsible",
    "state",
    "envelope_id",
    "seq",
    "status",
    "form_version",
    "applied_at",
    "attachments",
)
MIN_YEAR, MAX_YEAR = 1900, 9000  # what every database and datetime arithmetic holds
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class ExportCanceled(Exception):
    """The client went away: the producer stops."""


def _iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else ""


def _parse_time(text: str) -> datetime | None:
    """A date or ISO time as aware UTC, or None when it is not one we can use."""
    try:
        if len(text) == 10:
            value = datetime.combine(date.fromisoformat(text), time(0), tzinfo=UTC)
        else:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return value if MIN_YEAR <= value.year <= MAX_YEAR else None


def parse_bound(name: str, text: str | None, *, end: bool) -> datetime | None:
    """A ``from``/``to`` bound: a date (``to`` covers that whole day) or an ISO datetime."""
    if text is None or text == "":
        return None
    value = _parse_time(text) if len(text) <= 40 else None
    if value is None:
        raise bad_request(
            f"{name} must be a date like 2026-11-23 or a time like 2026-11-23T09:00:00Z "
            f"between the years {MIN_YEAR} and {MAX_YEAR} (got {text[:40]!r}).",
            "invalid_range",
        )
    if not end:
        return value
    # "to" is inclusive: a date covers its whole day, a time compares as < to + 1 µs.
    return value + (timedelta(days=1) if len(text) == 10 else timedelta(microseconds=1))


def cell(value: Any) -> str:
    """One CSV cell: numbers and booleans as JSON writes them, lists and objects as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        return "'" + value if value.startswith(FORMULA_START) else value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class Plan:
    """What one export writes: resolved before the first byte, so errors are still 4xx."""

    type_name: str
    start: datetime | None
    end: datetime | None
    fields: list[str]
    tables: dict[str, list[str]]  # table -> its fields, every version's

    @property
    def stem(self) -> str:
        parts = [self.type_name]
        if self.start:
            parts.append(self.start.date().isoformat())
        if self.end:
            parts.append((self.end - timedelta(microseconds=1)).date().isoformat())
        return "-".join(parts)


def plan(conn: Connection, type_name: str, start: datetime | None, end: datetime | None) -> Plan:
    t = conn.execute(select(ActivityType.form).where(ActivityType.name == type_name)).first()
    if t is None:
        raise CentralError("not_found", f"No activity type {type_name!r} exists.", 404)
    if start and end and start >= end:
        raise bad_request("from must be before to.", "invalid_range")
    forms = [t.form] + [
        f
        for (f,) in conn.execute(
            select(ActivityTypeVersion.form)
            .where(ActivityTypeVersion.type_name == type_name)
            .order_by(ActivityTypeVersion.form_version.desc())
        )
    ]
    fields: list[str] = []
    tables: dict[str, list[str]] = {}
    for form in forms:
        for f in form.get("fields", []):
            if f["name"] not in fields:
                fields.append(f["name"])
        for table in form.get("tables", []):
            cols = tables.setdefault(table["name"], [])
            for f in table.get("fields", []):
                if f["name"] not in cols:
                    cols.append(f["name"])
    return Plan(type_name, start, end, fields, tables)


def _in_range(stmt: Any, p: Plan) -> Any:
    stmt = stmt.where(Activity.type == p.type_name)
    if p.start is not None:
        stmt = stmt.where(Record.updated_at >= p.start)
    if p.end is not None:
        stmt = stmt.where(Record.updated_at < p.end)
    return stmt


def record_rows(conn: Connection, p: Plan) -> Iterator[list[str]]:
    yield [*RECORD_COLUMNS, *p.fields]
    stmt = _in_range(
        select(
            Activity.id,
            Activity.title,
            Activity.responsible,
            Activity.state,
            Record.envelope_id,
            Record.seq,
            Record.status,
            Record.form_version,
            Record.updated_at,
            Record.attachments,
            Record.data,
        )
        .join(Record, Record.activity_id == Activity.id)
        .order_by(Record.updated_at, Activity.id),
        p,
    )
    for r in conn.execute(stmt):
        data = r.data or {}
        yield [
            cell(r.id),
            cell(r.title),
            cell(r.responsible),
            r.state,
            r.envelope_id,
            str(r.seq),
            r.status,
            str(r.form_version),
            _iso(r.updated_at),
            " ".join(r.attachments or []),
            *(cell(data.get(name)) for name in p.fields),
        ]


def table_rows(conn: Connection, p: Plan, table: str) -> Iterator[list[str]]:
    cols = p.tables[table]
    yield ["activity_id", "row", *cols]
    stmt = _in_range(
        select(RecordRow.activity_id, RecordRow.row_index, RecordRow.data)
        .join(Activity, Activity.id == RecordRow.activity_id)
        .join(Record, Record.activity_id == RecordRow.activity_id)
        .where(RecordRow.table_name == table)
        .order_by(Record.updated_at, RecordRow.activity_id, RecordRow.row_index),
        p,
    )
    for r in conn.execute(stmt):
        data = r.data or {}
        yield [cell(r.activity_id), str(r.row_index + 1), *(cell(data.get(c)) for c in cols)]


def attachment_shas(conn: Connection, p: Plan) -> Iterator[str]:
    """The held blobs the records in range reference, each once, in record order."""
    seen: set[str] = set()
    stmt = _in_range(
        select(Record.attachments)
        .join(Activity, Activity.id == Record.activity_id)
        .order_by(Record.updated_at, Activity.id),
        p,
    )
    for (shas,) in conn.execute(stmt):
        for sha in shas or []:
            if sha not in seen:
                seen.add(sha)
                yield sha


def held(conn: Connection, shas: list[str]) -> set[str]:
    return set(conn.execute(select(Blob.sha256).where(Blob.sha256.in_(shas))).scalars())


_MAGIC = (
    (b"\xff\xd8\xff", ".jpg"),
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"GIF8", ".gif"),
    (b"%PDF", ".pdf"),
    (b"<svg", ".svg"),
    (b"<?xml", ".svg"),
)


def extension(path: Path) -> str:
    with path.open("rb") as fh:
        head = fh.read(16)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    return next((ext for magic, ext in _MAGIC if head.startswith(magic)), "")


# --- writing, in the producer thread ---------------------------------------------------


class Pipe(io.RawIOBase):
    """A write-only stream whose bytes go to the event loop in ~CHUNK pieces (bounded)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes | None]):
        super().__init__()
        self._loop = loop
        self._queue = queue
        self._buf = bytearray()
        self.canceled = threading.Event()
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._buf += data
        if len(self._buf) >= CHUNK:
            self._send(bytes(self._buf))
            self._buf.clear()
        return len(data)

    def flush(self) -> None:
        # zipfile flushes after every entry; a real flush happens in finish().
        pass

    def finish(self) -> None:
        if self._buf:
            self._send(bytes(self._buf))
            self._buf.clear()

    def _send(self, chunk: bytes) -> None:
        if self.canceled.is_set():
            raise ExportCanceled
        fut = asyncio.run_coroutine_threadsafe(self._queue.put(chunk), self._loop)
        while True:
            try:
                fut.result(timeout=0.5)
                break
            except TimeoutError:
                if self.canceled.is_set():
                    fut.cancel()
                    raise ExportCanceled from None
        self.written += len(chunk)


class _Text(io.TextIOBase):
    """The text side of a Pipe for ``csv.writer`` (UTF-8)."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def write(self, s: str) -> int:
        self._raw.write(s.encode("utf-8"))
        return len(s)


def write_csv(out: Any, rows: Iterator[list[str]]) -> int:
    writer = csv.writer(_Text(out), lineterminator="\r\n")
    n = -1  # the header
    for row in rows:
        writer.writerow(row)
        n += 1
    return n


@dataclass
class Exporter:
    """Runs exports in their own threads (at most MAX_EXPORTS at once)."""

    db: Database
    blobs: BlobStore

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(MAX_EXPORTS, thread_name_prefix="central-export")

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def read(self) -> Any:
        """A read-only connection: deferred BEGIN on SQLite, a snapshot on PostgreSQL."""
        conn = self.db.engine.connect()
        options: dict[str, Any] = {"outpost_read_only": True, "stream_results": True}
        options["yield_per"] = YIELD_PER
        if not self.db.sqlite:
            options["isolation_level"] = "REPEATABLE READ"
        return conn.execution_options(**options)

    def plan(self, type_name: str, start: datetime | None, end: datetime | None) -> Plan:
        with self.read() as conn, conn.begin():
            return plan(conn, type_name, start, end)

    def produce(self, p: Plan, fmt: str, table: str | None, out: Pipe) -> dict[str, int]:
        """Write the export to ``out`` (blocking, in an export thread)."""
        counts: dict[str, int] = {}
        with self.read() as conn, conn.begin():
            if fmt == "csv":
                rows = record_rows(conn, p) if table is None else table_rows(conn, p, table)
                counts[table or "records"] = write_csv(out, rows)
            else:
                self._zip(conn, p, out, counts)
        out.finish()
        return counts

    def _zip(self, conn: Connection, p: Plan, out: Pipe, counts: dict[str, int]) -> None:
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            with zf.open(f"{p.stem}/records.csv", "w", force_zip64=True) as entry:
                counts["records"] = write_csv(entry, record_rows(conn, p))
            for table in p.tables:
                with zf.open(f"{p.stem}/{table}.csv", "w", force_zip64=True) as entry:
                    counts[table] = write_csv(entry, table_rows(conn, p, table))
            counts["attachments"] = 0
            counts["attachments_missing"] = 0
            batch: list[str] = []
            for sha in attachment_shas(conn, p):
                batch.append(sha)
                if len(batch) >= 200:
                    self._files(conn, zf, p, batch, counts)
                    batch = []
            self._files(conn, zf, p, batch, counts)

    def _files(
        self,
        conn: Connection,
        zf: zipfile.ZipFile,
        p: Plan,
        shas: list[str],
        counts: dict[str, int],
    ) -> None:
        if not shas:
            return
        have = held(conn, shas)
        for sha in shas:
            path = self.blobs.path_of(sha)
            if sha not in have or not path.is_file():
                counts["attachments_missing"] += 1
                continue
            name = f"{p.stem}/attachments/{sha}{extension(path)}"
            info = zipfile.ZipInfo(name, date_time=_zip_time(path))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.file_size = path.stat().st_size
            # Photos are already compressed: the fastest level keeps the CPU for others
            # (zipfile reads the per-entry level from this attribute; 3.13 renamed it).
            slot = "_compresslevel" if "_compresslevel" in zipfile.ZipInfo.__slots__ else None
            setattr(info, slot or "compress_level", 1)
            with path.open("rb") as src, zf.open(info, "w", force_zip64=True) as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
            counts["attachments"] += 1

    async def async_stream(
        self, p: Plan, fmt: str, table: str | None, write: Any
    ) -> dict[str, int]:
        """Run the producer in a thread; ``await write(chunk)`` each chunk as it comes."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_CHUNKS)
        pipe = Pipe(loop, queue)

        def run() -> dict[str, int]:
            try:
                return self.produce(p, fmt, table, pipe)
            finally:
                # The end marker, unless the consumer is gone (then nobody waits for it).
                if not pipe.canceled.is_set():
                    asyncio.run_coroutine_threadsafe(queue.put(None), loop)

        producer = loop.run_in_executor(self._pool, run)
        try:
            while True:
                chunk = await queue.get()
                if chunk is None:
                    break
                await write(chunk)
            return await producer
        finally:
            if not producer.done():
                pipe.canceled.set()
                while not producer.done():
                    while not queue.empty():
                        queue.get_nowait()
                    await asyncio.sleep(0.01)
                try:
                    await producer
                except ExportCanceled:
                    logger.info("export of %s stopped: the client went away", p.type_name)
                except Exception:
                    logger.exception("export of %s failed", p.type_name)


def _zip_time(path: Path) -> tuple[int, int, int, int, int, int]:
    t = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return (max(t.year, 1980), t.month, t.day, t.hour, t.minute, t.second)
