"""Steps the browser tests share: waiting, reading the app's IndexedDB, drawing, confirming."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from playwright.sync_api import Page, expect

from tests.web.conftest import GatewayProcess


def wait_until(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def envelopes_at_gateway(gw: GatewayProcess, token: str, activity_id: str) -> list[dict[str, Any]]:
    return list(gw.call("GET", f"/api/v1/envelopes?activity_id={activity_id}", token)["envelopes"])


def idb(page: Page, store: str) -> list[Any]:
    """Everything in one store of the app's IndexedDB (without creating the database)."""
    return list(
        page.evaluate(
            """async (store) => {
                const dbs = await indexedDB.databases();
                if (!dbs.some((d) => d.name === "outpost")) return [];
                const db = await new Promise((ok, no) => {
                    const r = indexedDB.open("outpost");
                    r.onsuccess = () => ok(r.result);
                    r.onerror = () => no(r.error);
                });
                try {
                    return await new Promise((ok, no) => {
                        const r = db.transaction(store).objectStore(store).getAll();
                        r.onsuccess = () => ok(r.result.map((x) => x.envelope_id ? x.body : x.sha256 || x));
                        r.onerror = () => no(r.error);
                    });
                } finally {
                    db.close();
                }
            }""",
            store,
        )
    )


def draw_signature(page: Page) -> None:
    pad = page.locator(".sig-canvas")
    pad.scroll_into_view_if_needed()
    box = pad.bounding_box()
    assert box is not None
    x0, y0 = box["x"] + 30, box["y"] + box["height"] * 0.6
    page.mouse.move(x0, y0)
    page.mouse.down()
    for i in range(1, 30):
        page.mouse.move(x0 + i * 9, y0 - 40 * ((i % 6) / 6) + (i % 3) * 6)
    page.mouse.up()
    expect(page.locator(".sig-hint")).to_have_text("Signed. Sign again to replace it.")


def attach_photo(page: Page, data: bytes) -> None:
    page.locator("input[type=file]").set_input_files(
        files=[{"name": "fence.png", "mimeType": "image/png", "buffer": data}]
    )
    expect(page.locator(".photo-img")).to_have_attribute("src", re.compile(r"^blob:"))


def confirm(page: Page, button: str) -> None:
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name=button).click()
    expect(dialog).to_be_hidden()


def head_badge(page: Page) -> Any:
    return page.locator("#activity-head .badge")
