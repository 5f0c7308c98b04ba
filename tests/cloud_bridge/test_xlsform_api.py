"""``POST /api/v1/activity-types`` with an XLSForm body: versions, errors, no 5xx for any bytes."""

from __future__ import annotations

import os
from typing import Any

from cloud_bridge.service import Bridge
from cloud_bridge.xlsform import XLSX_CONTENT_TYPE
from tests.cloud_bridge.conftest import TOKEN, Admin
from tests.cloud_bridge.xlsform_books import simple


async def upload(
    admin: Admin, data: bytes, query: str = "", content_type: str = XLSX_CONTENT_TYPE
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type}
    async with admin.session.post(
        f"{admin.base}/api/v1/activity-types{query}", data=data, headers=headers
    ) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


async def test_each_changed_import_is_a_new_version(bridge: Bridge, admin: Admin) -> None:
    first = simple(("text", "notes", "Notes"), ("integer", "count", "How many?"))
    status, body = await upload(admin, first)
    assert status == 201, body
    assert body["name"] == "small" and body["form_version"] == 1 and body["offline"] is False
    count = body["form"]["fields"][1]
    assert (count["name"], count["type"], count["label"]) == ("count", "integer", "How many?")
    assert body["xlsform"]["form_id"] == "small"
    # The same workbook again changes nothing; a changed one is version 2, offline kept.
    await admin.ok(
        "POST",
        "/api/v1/activity-types",
        {"name": "small", "offline": True, "form": body["form"]},
    )
    status, again = await upload(admin, first)
    assert (status, again["form_version"], again["offline"]) == (200, 1, True)
    changed = simple(("text", "notes", "Notes"), ("decimal", "count", "How much?"))
    status, second = await upload(admin, changed)
    assert (status, second["form_version"], second["offline"]) == (200, 2, True)
    kept = await admin.ok("GET", "/api/v1/activity-types/small")
    assert [v["form_version"] for v in kept["versions"]] == [2, 1]
    one = await admin.ok("GET", "/api/v1/activity-types/small/versions/1")
    assert one["form"]["fields"][1]["type"] == "integer"
    # Another name and the offline switch from the query.
    status, other = await upload(admin, first, "?name=small_copy&offline=true")
    assert (status, other["name"], other["offline"]) == (201, "small_copy", True)
    audit = await admin.ok("GET", "/api/v1/audit?target_id=small_copy")
    assert "from an XLSForm" in str(audit)


async def test_refusals_are_4xx_json_naming_the_place(bridge: Bridge, admin: Admin) -> None:
    status, body = await upload(admin, simple(("text", "a", "A"), ("geotrace", "route", "Route")))
    assert status == 400, body
    error = body["error"]
    assert error["code"] == "invalid_xlsform"
    assert error["problems"] == [
        {
            "sheet": "survey",
            "row": 3,
            "column": "type",
            "message": "'geotrace' is not supported",
            "text": "survey row 3, column type: 'geotrace' is not supported",
        }
    ]
    assert "survey row 3, column type: 'geotrace' is not supported" in error["message"]
    # Nothing half-imported.
    types = await admin.ok("GET", "/api/v1/activity-types")
    assert types["activity_types"] == []
    status, body = await upload(admin, simple(("text", "a", "A")), "?name=Bad%20Name")
    assert status == 400 and "lowercase" in body["error"]["message"]
    status, body = await upload(admin, simple(("text", "a", "A")), "?nom=x")
    assert status == 400 and body["error"]["code"] == "invalid_query"
    # The query is the upload's: with a JSON body it is refused, not ignored.
    status, body = await upload(
        admin, b'{"name": "t", "form": {}}', "?offline=true", content_type="application/json"
    )
    assert status == 400 and body["error"]["code"] == "invalid_query"
    status, body = await upload(admin, simple(("text", "a", "A")), "?offline=maybe")
    assert status == 400 and body["error"]["code"] == "invalid_query"


async def test_no_bytes_give_a_5xx(bridge: Bridge, admin: Admin) -> None:
    good = simple(("text", "a", "A"))
    samples = [
        b"",
        b"garbage",
        os.urandom(4096),
        b"PK\x03\x04" + os.urandom(2048),
        good[: len(good) // 2],
        good[:-22],  # no end of central directory
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + os.urandom(1024),
        b"PK\x05\x06" + b"\x00" * 18,  # an empty zip
    ]
    for data in samples:
        status, body = await upload(admin, data)
        assert status == 400, (data[:20], body)
        assert body["error"]["code"] == "invalid_xlsform" and body["error"]["problems"]
    # Past the admin API's body limit (64 KiB in these tests): 413, before any parsing.
    status, body = await upload(admin, b"PK\x03\x04" + b"\x00" * (200 * 1024))
    assert status == 413 and body["error"]["code"] == "body_too_large"
    # JSON still goes the JSON way; another content type is read as JSON too.
    status, body = await upload(admin, good, content_type="application/json")
    assert status == 400 and body["error"]["code"] == "invalid_json"


async def test_the_openapi_document_describes_the_upload(bridge: Bridge, admin: Admin) -> None:
    doc = await admin.ok("GET", "/api/v1/openapi.json")
    op = doc["paths"]["/api/v1/activity-types"]["post"]
    assert XLSX_CONTENT_TYPE in op["requestBody"]["content"]
    assert "application/json" in op["requestBody"]["content"]
    assert {p["name"] for p in op["parameters"]} >= {"name", "offline"}
    schema = op["responses"]["400"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/XlsformError"}
    problem = doc["components"]["schemas"]["XlsformProblem"]
    assert set(problem["properties"]) == {"sheet", "row", "column", "message", "text"}
