"""The Activity types pages' XLSForm upload, as a browser without JavaScript posts it."""

from __future__ import annotations

import html

import aiohttp

from cloud_bridge.service import Bridge
from cloud_bridge.xlsform import XLSX_CONTENT_TYPE
from tests.cloud_bridge.test_platform import Browser, make_user
from tests.cloud_bridge.xlsform_books import simple


async def post_file(
    b: Browser, path: str, data: bytes | None, **fields: str
) -> tuple[int, str, str]:
    form = aiohttp.FormData()
    form.add_field("csrf_token", b.csrf)
    for key, value in fields.items():
        form.add_field(key, value)
    if data is not None:
        form.add_field("xlsform", data, filename="form.xlsx", content_type=XLSX_CONTENT_TYPE)
    else:  # a multipart form without the file (as a browser sends it, file or not)
        form.add_field("note", b"", filename="", content_type="application/octet-stream")
    async with b.http.post(b.url + path, data=form, allow_redirects=False) as r:
        return r.status, r.headers.get("Location", ""), await r.text()


async def signed_in_admin(bridge: Bridge) -> Browser:
    async with aiohttp.ClientSession() as http:
        await make_user(http, bridge.admin_url, "adele", "admin")
    b = Browser(bridge.admin_url)
    status, _ = await b.sign_in("adele")
    assert status == 200
    await b.get("/types")
    return b


async def test_a_refused_workbook_comes_back_with_its_problems(bridge: Bridge) -> None:
    async with await signed_in_admin(bridge) as b:
        status, _, page = await post_file(
            b, "/types", simple(("text", "a", "A"), ("geotrace", "route", "Route"))
        )
        assert status == 400
        assert "The XLSForm was not imported" in page
        assert "survey row 3, column type: &#39;geotrace&#39; is not supported" in page
        assert "data-xlsform-problems" in page
        status, _, page = await post_file(b, "/types", b"not a workbook")
        assert status == 400 and "not an .xlsx workbook" in page
        status, _, page = await post_file(b, "/types", None)
        assert status == 400 and "Choose an .xlsx file" in page
        # A type's page imports only into itself: an unknown one is not created.
        status, _, page = await post_file(b, "/types/nope", simple(("text", "a", "A")))
        assert status == 404 and "No activity type" in html.unescape(page)
        # Past the admin port's body limit (64 KiB in these tests): a 413 page, not a 500.
        status, _, page = await post_file(b, "/types", b"PK\x03\x04" + b"\x00" * (200 * 1024))
        assert status == 413
        # Without the form's CSRF token: refused, as every page form.
        b.csrf = "wrong"
        status, _, page = await post_file(b, "/types", simple(("text", "a", "A")))
        assert status == 403


async def test_import_then_a_new_version_from_the_type_page(bridge: Bridge) -> None:
    async with await signed_in_admin(bridge) as b:
        status, where, _ = await post_file(
            b, "/types", simple(("text", "a", "A")), name="", offline="1"
        )
        assert (status, where) == (303, "/types/small?done=imported")
        status, page = await b.get(where)
        assert status == 200 and "The XLSForm is imported" in page
        assert "Or upload a new version as an XLSForm" in page
        status, where, _ = await post_file(
            b, "/types/small", simple(("text", "a", "A"), ("integer", "n", "N"))
        )
        assert (status, where) == (303, "/types/small?done=imported")
        status, page = await b.get("/types")
        assert 'data-type="small"' in page and "2 versions" in page
