"""The /fleet page in Chromium with a fleet larger than one page: a phone at 390 px, the form, paging."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from cloud_bridge import fleet
from cloud_bridge.db import Database
from cloud_bridge.models import Gateway
from tests.web.platform import Person, PlatformBridge, platform_bridge  # noqa: F401

pytestmark = pytest.mark.browser


def seed_fleet(db_url: str, n: int) -> None:
    now = datetime.now(UTC)
    db = Database.from_url(db_url)
    try:
        with db.session() as s:
            for i in range(1, n + 1):
                heard = now - timedelta(hours=2) if i % 4 == 0 else now
                g = Gateway(
                    id=f"offshore-platform-{i:03d}", first_seen=now, last_seen=now, state="online"
                )
                hb = {"counts": {"queued": i}, "disk_free_bytes": 9 * 1024**3, "version": "0.3.0"}
                g.last_heartbeat, g.heartbeat_at, g.version = hb, heard, "0.3.0"
                fleet.set_figures(g, hb, heard)
                s.add(g)
    finally:
        db.dispose()


def test_fleet_page_on_a_phone_searches_and_pages(
    chromium_browser: Any,
    platform_bridge: PlatformBridge,  # noqa: F811
    central_db_url: str,
    tmp_path: Path,
) -> None:
    b = platform_bridge
    b.person("vera", "viewer")
    url = central_db_url  # the database platform_bridge runs on
    if url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'central' / 'central.db'}"
    seed_fleet(url, 61)
    vera = Person.open(chromium_browser, b.url, phone=True)
    try:
        vera.sign_in("vera")
        vera.go("/fleet")
        expect(vera.page.locator("[data-total]")).to_have_text("61 gateways")
        expect(vera.page.locator("[data-showing]")).to_have_text("1\u201350 of 61 gateways")
        expect(vera.page.locator('[data-list="fleet"] tbody tr')).to_have_count(50)
        vera.no_horizontal_overflow()
        vera.screenshot("fleet-paged")
        vera.page.locator('[data-page="next"]').click()
        expect(vera.page.locator("[data-showing]")).to_have_text("51\u201361 of 61 gateways")
        expect(vera.page.locator('[data-list="fleet"] tbody tr')).to_have_count(11)
        vera.no_horizontal_overflow()
        # the form: a search and a health filter
        vera.page.get_by_label("Search").fill("platform-00")
        vera.page.get_by_label("Health").select_option("critical")
        vera.page.get_by_role("button", name="Filter").click()
        expect(vera.page.locator("[data-showing]")).to_have_text("2 gateways matching")
        expect(vera.page.locator('tr[data-gateway="offshore-platform-004"]')).to_be_visible()
        vera.no_horizontal_overflow()
        # a count in the summary is a link to those gateways
        vera.go("/fleet")
        vera.page.locator('[data-count="critical"]').click()
        expect(vera.page.locator("[data-showing]")).to_have_text("15 gateways matching")
    finally:
        vera.close()
