"""The whole crew flow in the browser, from sign-in to *applied* by central.

Real processes all the way: Mosquitto (``broker``), ``outpost-bridge run``
with its central SQLite database, ``outpost-gateway run`` with its uplink,
and Debian's Chromium on a LAN-like name. Central's admin API sets up the
crew and dispatches the activity, exactly as an admin would; the crew's
credentials and the activity reach the gateway over MQTT.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ADMIN_TOKEN, BridgeProcess
from tests.gateway.conftest import PASSWORDS
from tests.support.broker import Broker
from tests.web.conftest import FORM, Crew, GatewayProcess, chromium_missing, png_photo
from tests.web.steps import attach_photo, confirm, draw_signature, head_badge, wait_until

pytestmark = pytest.mark.browser


def admin(bridge: BridgeProcess, method: str, path: str, body: Any = None) -> Any:
    req = urllib.request.Request(
        bridge.url + path,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


@pytest.fixture
def chain(tmp_path: Path, broker: Broker) -> Iterator[tuple[BridgeProcess, GatewayProcess]]:
    if reason := chromium_missing():
        pytest.skip(reason)
    bridge = BridgeProcess(
        tmp_path / "central", broker, f"sqlite:///{tmp_path / 'central' / 'central.db'}"
    )
    gw = GatewayProcess(tmp_path / "gateway", mqtt={"host": broker.host, "port": broker.port})
    gw.write_config()
    try:
        # Both start (and wait for their ports) side by side: a second saved per test.
        with ThreadPoolExecutor(2) as pool:
            for started in [pool.submit(bridge.start), pool.submit(gw.start)]:
                started.result()
        yield bridge, gw
    finally:
        gw.stop()
        bridge.stop()


def test_crew_flow_from_sign_in_to_applied_by_central(
    chain: tuple[BridgeProcess, GatewayProcess], crew: Crew
) -> None:
    bridge, gw = chain
    admin(
        bridge,
        "POST",
        "/api/v1/activity-types",
        {"name": "inspection", "offline": True, "form": FORM.model_dump(exclude_none=True)},
    )
    admin(
        bridge,
        "PUT",
        "/api/v1/users/alice",
        {"password": PASSWORDS["alice"], "offline": True, "sites": [gw.gateway_id]},
    )
    act = admin(
        bridge,
        "POST",
        "/api/v1/activities",
        {"title": "Substation 4 inspection", "type": "inspection", "responsible": "alice"},
    )
    admin(bridge, "POST", f"/api/v1/activities/{act['id']}/approve", {"approver": "alice"})
    admin(bridge, "POST", f"/api/v1/activities/{act['id']}/dispatch", {"gateway_id": gw.gateway_id})
    # A second one is approved but not dispatched: the crew takes it offline itself.
    other = admin(
        bridge,
        "POST",
        "/api/v1/activities",
        {"title": "Transformer T2 check", "type": "inspection", "responsible": "alice"},
    )
    admin(bridge, "POST", f"/api/v1/activities/{other['id']}/approve", {"approver": "alice"})

    def dispatched() -> bool:
        try:
            found = gw.call("GET", "/api/v1/activities", gw.token())["activities"]
        except urllib.error.HTTPError:
            return False  # the user push has not arrived yet
        return any(a["id"] == act["id"] for a in found)

    wait_until(dispatched, 20, "the crew and the activity to reach the gateway over MQTT")

    page = crew.page
    # Central can check the activity in between the app's list and detail
    # requests; the detail then answers 404 (the app shrugs, Chromium logs it).
    crew.may_happen.append(f"404 (Not Found) ({gw.lan_url}/api/v1/activities/{act['id']})")
    crew.sign_in(gw.lan_url)
    expect(page.locator("[data-activity]")).to_have_count(1)
    page.get_by_label("Activity ID").fill(other["id"])
    page.get_by_role("button", name="Take offline").click()
    expect(page.locator(f"[data-activity='{other['id']}']")).to_be_visible()
    expect(page.locator("#toast")).to_contain_text("is now offline on this gateway")

    page.click(f"[data-activity='{act['id']}']")
    page.get_by_role("radio", name="Yes").check()
    page.get_by_label("Notes").fill("Breaker B3 replaced.")
    photo = png_photo(240, 180)
    attach_photo(page, photo)
    draw_signature(page)
    page.get_by_role("button", name="Add readings row").click()
    page.get_by_label("Meter").fill("T2")
    page.get_by_label("Value").fill("231.5")
    page.get_by_role("button", name="Save draft").click()
    expect(head_badge(page)).to_contain_text("Draft")
    page.get_by_role("button", name="Mark completed").click()
    confirm(page, "Mark completed")

    # The badge moves by itself: completed → syncing → applied (central's answer).
    page.get_by_role("link", name="Activities", exact=True).click()
    expect(page.locator(f"[data-activity='{act['id']}'] .badge")).to_contain_text(
        "Applied", timeout=20_000
    )
    crew.screenshot("11-applied")

    record = admin(bridge, "GET", f"/api/v1/activities/{act['id']}/record")
    text = json.dumps(record)
    assert "Breaker B3 replaced." in text and "231.5" in text
    assert hashlib.sha256(photo).hexdigest() in text
    # Checked in: the activity is back in central's online list.
    online = admin(bridge, "GET", "/api/v1/activities?state=online")
    items = online["activities"] if isinstance(online, dict) else online
    assert act["id"] in {a["id"] for a in items}
    page.get_by_role("link", name="Pending").click()
    expect(page.locator("#backhaul")).to_contain_text("Backhaul is up")
    expect(page.locator("#counts [data-state=applied] dd")).to_have_text("2")
