"""Central sends completed work back with a note: the crew sees it on the phone and corrects it.

Real processes: Mosquitto, ``outpost-bridge run``, ``outpost-gateway run``
and Debian's Chromium on a LAN-like name (a phone on site Wi-Fi).
"""

from __future__ import annotations

import urllib.error

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import BridgeProcess
from tests.gateway.conftest import PASSWORDS
from tests.web.conftest import FORM, Crew, GatewayProcess
from tests.web.steps import confirm, head_badge, wait_until
from tests.web.test_webapp_chain import admin, chain  # noqa: F401  (the fixture)

pytestmark = pytest.mark.browser

NOTE = "Notes say the breaker is fine, but meter T2 reads 0. Check T2 and say what you did."


def test_sent_back_with_a_note_corrected_and_applied_again(
    chain: tuple[BridgeProcess, GatewayProcess],  # noqa: F811
    crew: Crew,
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
    aid = act["id"]
    admin(bridge, "POST", f"/api/v1/activities/{aid}/approve", {"approver": "alice"})
    admin(bridge, "POST", f"/api/v1/activities/{aid}/dispatch", {"gateway_id": gw.gateway_id})

    def listed() -> bool:
        try:
            found = gw.call("GET", "/api/v1/activities", gw.token())["activities"]
        except urllib.error.HTTPError:
            return False
        return any(a["id"] == aid for a in found)

    wait_until(listed, 20, "the crew and the activity to reach the gateway")
    page = crew.page
    crew.may_happen.append(f"404 (Not Found) ({gw.lan_url}/api/v1/activities/{aid})")
    crew.sign_in(gw.lan_url)
    page.click(f"[data-activity='{aid}']")
    page.get_by_role("radio", name="Yes").check()
    page.get_by_label("Notes").fill("Breaker fine.")
    page.get_by_role("button", name="Add readings row").click()
    page.get_by_label("Meter").fill("T2")
    page.get_by_label("Value").fill("0")
    page.get_by_role("button", name="Mark completed").click()
    confirm(page, "Mark completed")
    page.get_by_role("link", name="Activities", exact=True).click()
    badge = page.locator(f"[data-activity='{aid}'] .badge")
    expect(badge).to_contain_text("Applied", timeout=20_000)

    out = admin(
        bridge, "POST", f"/api/v1/activities/{aid}/review", {"state": "has_issues", "note": NOTE}
    )
    assert out["sent_to_gateway"] == gw.gateway_id

    # The phone shows it sent back (the app polls the gateway), with the note.
    expect(badge).to_contain_text("Sent back", timeout=30_000)
    crew.screenshot("20-sent-back-list")
    page.click(f"[data-activity='{aid}']")
    expect(page.locator("#review-note")).to_contain_text(NOTE)
    # The last round's answers are there to correct; the form is editable again.
    expect(page.get_by_label("Notes")).to_have_value("Breaker fine.")
    crew.screenshot("21-sent-back-note", scroll_to="#review-note")
    page.get_by_label("Notes").fill("T2 fuse replaced; reads 231.5 now.")
    page.get_by_label("Value").fill("231.5")
    page.get_by_role("button", name="Mark completed").click()
    confirm(page, "Mark completed")
    expect(head_badge(page)).to_contain_text("Applied", timeout=20_000)
    expect(page.locator("#review-note")).to_contain_text("Your correction is completed.")

    def second_round_applied() -> bool:
        record = admin(bridge, "GET", f"/api/v1/activities/{aid}/record")
        return bool(record["record"]["notes"] == "T2 fuse replaced; reads 231.5 now.")

    wait_until(second_round_applied, 20, "the second round to apply at central")
    reviews = admin(bridge, "GET", f"/api/v1/activities/{aid}/reviews")
    assert [len(r["envelopes"]) for r in reviews["rounds"]] == [1, 1]
    assert reviews["rounds"][1]["sent_back_by"]["note"] == NOTE
