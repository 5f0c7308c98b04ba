"""Exports: the records and each child table as CSV, or a ZIP with the files, streamed."""

from __future__ import annotations

import csv
import hashlib
import io
import struct
import zipfile
import zlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from cloud_bridge.service import Bridge
from outpost.wire.schemas import BlobChunk
from tests.cloud_bridge.conftest import TOKEN, Admin, FakeGateway, envelope

FORM: dict[str, Any] = {
    "fields": [
        {"name": "site_ok", "type": "boolean", "required": True},
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
        },
        {"name": "defects", "fields": [{"name": "what", "type": "text"}]},
    ],
}


def png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * 4 for _ in range(4))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


async def get(admin: Admin, path: str) -> tuple[int, str, bytes]:
    async with admin.session.get(
        admin.base + path, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.read()


def rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


async def _applied(admin: Admin, gw: FakeGateway, photo: bytes) -> tuple[str, str]:
    await admin.ok(
        "PUT",
        "/api/v1/users/ana",
        {"password": "correct horse", "offline": True, "sites": ["site-a", "site-b"]},
    )
    await admin.ok(
        "POST", "/api/v1/activity-types", {"name": "visit", "offline": True, "form": FORM}
    )
    sha = hashlib.sha256(photo).hexdigest()
    ids = []
    for aid, notes, extra in (
        ("act-1", '=HYPERLINK("http://evil")', {"photo": sha}),
        ("act-2", 'plain, with "quotes"\nand a new line', {}),
    ):
        await admin.ok(
            "POST",
            "/api/v1/activities",
            {"title": f"Visit {aid}", "type": "visit", "responsible": "ana", "id": aid},
        )
        await admin.ok("POST", f"/api/v1/activities/{aid}/approve", {"approver": "ana"})
        await admin.ok("POST", f"/api/v1/activities/{aid}/dispatch", {"gateway_id": "site-a"})
        d = await gw.expect("down/dispatch")
        env = envelope(
            aid,
            1,
            base_version=d.activity.version,
            status="completed",
            record={"site_ok": True, "notes": notes, **extra},
            tables={
                "readings": [{"meter": "A1", "value": 1.5}, {"meter": "B2", "value": -3}],
                "defects": [{"what": "rust"}],
            },
        )
        env = env.model_copy(update={"attachments": [sha] if extra else []})
        await gw.publish("up/envelopes", gw.batch([env]))
        ids.append(str(env.envelope_id))
        await gw.results(1)
    await gw.publish(
        "up/blobs",
        BlobChunk(gateway_id="site-a", sha256=sha, size=len(photo), offset=0, data=photo),
    )
    receipt = await gw.expect("down/blobs")
    assert receipt.complete
    return sha, ids[0]


async def test_csv_zip_and_ranges(
    bridge: Bridge, admin: Admin, gateways: Callable[[str], Awaitable[FakeGateway]]
) -> None:
    gw = await gateways("site-a")
    photo = png()
    sha, first_envelope = await _applied(admin, gw, photo)

    status, ctype, body = await get(admin, "/api/v1/exports/visit?format=csv")
    assert status == 200 and ctype.startswith("text/csv"), body[:200]
    records = rows(body)
    assert [r["activity_id"] for r in records] == ["act-1", "act-2"]
    assert records[0]["envelope_id"] == first_envelope and records[0]["status"] == "completed"
    assert records[0]["site_ok"] == "true" and records[0]["photo"] == sha
    assert records[0]["attachments"] == sha
    # A formula is defused; quotes and new lines survive the round trip.
    assert records[0]["notes"] == '\'=HYPERLINK("http://evil")'
    assert records[1]["notes"] == 'plain, with "quotes"\nand a new line'

    status, _, body = await get(admin, "/api/v1/exports/visit?format=csv&table=readings")
    readings = rows(body)
    assert status == 200 and len(readings) == 4
    assert readings[0] == {"activity_id": "act-1", "row": "1", "meter": "A1", "value": "1.5"}
    assert readings[1]["value"] == "-3"  # numbers are not defused

    today = datetime.now(UTC).date()
    status, ctype, body = await get(
        admin, f"/api/v1/exports/visit?format=zip&from={today}&to={today}"
    )
    assert status == 200 and ctype == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(body))
    assert zf.testzip() is None
    stem = f"visit-{today}-{today}"
    names = set(zf.namelist())
    assert names == {
        f"{stem}/records.csv",
        f"{stem}/readings.csv",
        f"{stem}/defects.csv",
        f"{stem}/attachments/{sha}.png",
    }, names
    assert zf.read(f"{stem}/attachments/{sha}.png") == photo
    assert len(rows(zf.read(f"{stem}/records.csv"))) == 2
    assert rows(zf.read(f"{stem}/defects.csv"))[1] == {
        "activity_id": "act-2",
        "row": "1",
        "what": "rust",
    }

    # Every export is in the audit log: who, what, from where (before its first byte).
    log = (await admin.ok("GET", "/api/v1/audit?action=export.download"))["entries"]
    assert [e["details"]["format"] for e in log] == ["zip", "csv", "csv"]  # newest first
    assert all(e["actor_kind"] == "admin_token" and e["client"] for e in log)
    assert all(e["target_type"] == "activity_type" and e["target_id"] == "visit" for e in log)
    assert log[1]["details"]["table"] == "readings" and "table 'readings'" in log[1]["summary"]
    assert (
        f"every table and the files, {today}T00:00:00+00:00 to {today}T23:59:59"
        in log[0]["summary"]
    )

    # A range that holds nothing: only the header.
    yesterday = today - timedelta(days=1)
    status, _, body = await get(admin, f"/api/v1/exports/visit?to={yesterday}")
    assert status == 200 and rows(body) == [] and body.startswith(b"activity_id,title")
    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    status, _, body = await get(admin, f"/api/v1/exports/visit?from={later}")
    assert status == 200 and rows(body) == []


async def test_a_form_version_that_dropped_a_field_keeps_its_column(
    bridge: Bridge, admin: Admin, gateways: Callable[[str], Awaitable[FakeGateway]]
) -> None:
    gw = await gateways("site-a")
    await _applied(admin, gw, png())
    slim = {"fields": [{"name": "site_ok", "type": "boolean"}], "tables": []}
    await admin.ok(
        "POST", "/api/v1/activity-types", {"name": "visit", "offline": True, "form": slim}
    )
    status, _, body = await get(admin, "/api/v1/exports/visit")
    assert status == 200
    header = body.split(b"\r\n", 1)[0].decode().split(",")
    assert header[-3:] == ["site_ok", "notes", "photo"]
    status, _, body = await get(admin, "/api/v1/exports/visit?table=defects")
    assert status == 200 and len(rows(body)) == 2


async def test_bad_requests_are_4xx_naming_the_problem(bridge: Bridge, admin: Admin) -> None:
    await admin.ok(
        "POST", "/api/v1/activity-types", {"name": "visit", "offline": True, "form": FORM}
    )
    for path, status, code in (
        ("/api/v1/exports/nope", 404, "not_found"),
        ("/api/v1/exports/visit?format=xlsx", 400, "invalid_format"),
        ("/api/v1/exports/visit?from=yesterday", 400, "invalid_range"),
        ("/api/v1/exports/visit?from=0001-01-01T00:30:00%2B01:00", 400, "invalid_range"),
        ("/api/v1/exports/visit?to=9999-12-31", 400, "invalid_range"),
        ("/api/v1/exports/visit?from=" + "9" * 5000, 400, "invalid_range"),
        ("/api/v1/exports/visit?from=2026-02-01&to=2026-01-01", 400, "invalid_range"),
        ("/api/v1/exports/visit?table=nope", 400, "invalid_table"),
        ("/api/v1/exports/visit?format=zip&table=readings", 400, "invalid_table"),
    ):
        got, _, body = await get(admin, path)
        assert got == status and code.encode() in body, (path, got, body[:300])
    async with aiohttp.ClientSession() as s, s.get(admin.base + "/api/v1/exports/visit") as r:
        assert r.status == 401


async def test_a_failure_part_way_breaks_the_download(
    bridge: Bridge,
    admin: Admin,
    gateways: Callable[[str], Awaitable[FakeGateway]],
    monkeypatch: Any,
) -> None:
    from cloud_bridge import exports

    gw = await gateways("site-a")
    await _applied(admin, gw, png())

    def broken(path: Any) -> str:
        raise OSError("disk read error")

    monkeypatch.setattr(exports, "extension", broken)
    try:
        async with admin.session.get(
            admin.base + "/api/v1/exports/visit?format=zip",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=aiohttp.ClientTimeout(total=20),
        ) as r:
            assert r.status == 200
            await r.read()
    except aiohttp.ClientPayloadError:
        pass
    else:
        raise AssertionError("a broken export must not end like a complete one")
    # The bridge goes on serving.
    status, _, _ = await get(admin, "/api/v1/exports/visit")
    assert status == 200
