"""The central platform in Chromium against a real bridge process (SQLite and PostgreSQL).

An admin creates a user and an activity on the pages; the responsible crew
member signs in on a phone and approves it with their password; a dispatcher
dispatches it; a wrong-role person is refused each action with a clear page.
Every page has no horizontal overflow at 390 px and no console error (a CSP
violation would be one).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.web.conftest import FORM
from tests.web.platform import Person, PlatformBridge, platform_bridge  # noqa: F401

pytestmark = pytest.mark.browser
GW = "site-web"


@pytest.fixture
def people(chromium_browser: Any, platform_bridge: PlatformBridge) -> Iterator[dict[str, Person]]:  # noqa: F811
    b = platform_bridge
    b.api(
        "POST",
        "/api/v1/activity-types",
        {"name": "inspection", "offline": True, "form": FORM.model_dump(exclude_none=True)},
    )
    b.person("ada", "admin", display_name="Ada Admin")
    b.person("dina", "dispatcher", display_name="Dina Dispatch")
    b.person("vera", "viewer")
    made = {
        "ada": Person.open(chromium_browser, b.url),
        "dina": Person.open(chromium_browser, b.url),
        "vera": Person.open(chromium_browser, b.url, phone=True),
        "cruz": Person.open(chromium_browser, b.url, phone=True),
    }
    yield made
    for p in made.values():
        p.close()


def test_admin_crew_and_dispatcher_take_an_activity_offline(
    people: dict[str, Person],
    platform_bridge: PlatformBridge,  # noqa: F811
) -> None:
    ada, dina, vera, cruz = people["ada"], people["dina"], people["vera"], people["cruz"]

    # The admin creates the crew member on the Users page: role, offline, site.
    ada.sign_in("ada")
    ada.go("/users/new")
    page = ada.page
    page.get_by_label("User name").fill("cruz")
    page.get_by_label("Full name").fill("Cruz Field")
    page.get_by_label("Password").fill("cruz field password")
    page.get_by_label("Role").select_option("crew")
    page.get_by_label("May work offline").check()
    page.get_by_label("Other gateway ids").fill(GW)
    ada.screenshot("user-new")
    page.get_by_role("button", name="Create user").click()
    expect(page.locator(".flash")).to_have_text("Created.")
    ada.screenshot("user")
    ada.go("/users")
    row = page.locator('tr[data-user="cruz"]')
    expect(row).to_contain_text("crew")
    expect(row).to_contain_text(GW)
    ada.screenshot("users")

    # ... and the activity, responsible cruz.
    ada.go("/activities/new")
    page.get_by_label("Title").fill("Substation 4 inspection")
    page.get_by_label("Type").select_option("inspection")
    page.get_by_label("Responsible user").select_option("cruz")
    ada.screenshot("activity-new")
    page.get_by_role("button", name="Create").click()
    expect(page.locator(".flash")).to_have_text("Created.")
    activity_url = page.url.split("?")[0]
    aid = activity_url.rsplit("/", 1)[1]
    expect(page.locator("[data-missing]")).to_contain_text("approval by cruz")
    # The admin is not the responsible user: no approve form for her.
    expect(page.locator('[data-form="approve"]')).to_have_count(0)

    # The crew member, on a phone: sees only their own, approves with their password.
    cruz.sign_in("cruz", "cruz field password")
    cruz.go("/activities")
    expect(cruz.page.locator(f'tr[data-activity="{aid}"]')).to_be_visible()
    cruz.no_horizontal_overflow()
    cruz.screenshot("activities")
    cruz.page.locator(f'tr[data-activity="{aid}"] a').click()
    cruz.no_horizontal_overflow()
    form = cruz.page.locator('[data-form="approve"]')
    form.get_by_label("Your password, to approve").fill("not my password")
    form.get_by_role("button", name="Approve").click()
    expect(cruz.page.locator(".error")).to_contain_text("not your password")
    form = cruz.page.locator('[data-form="approve"]')
    form.get_by_label("Your password, to approve").fill("cruz field password")
    form.get_by_role("button", name="Approve").click()
    expect(cruz.page.locator(".flash")).to_contain_text("Approved")
    expect(cruz.page.locator("dl.facts")).to_contain_text("by cruz")
    # Crew may not dispatch: no form, and a forged post gets a page saying why.
    expect(cruz.page.locator('[data-form="dispatch"]')).to_have_count(0)
    answer = cruz.post_form(f"/activities/{aid}/dispatch", {"gateway_id": GW})
    assert answer.status == 403 and "Your role (crew) may not dispatch" in answer.text()
    cruz.go("/users")
    expect(cruz.page.locator("[data-refused]")).to_contain_text(
        "Your role (crew) may not see users"
    )
    cruz.no_horizontal_overflow()
    cruz.screenshot("refused")

    # The dispatcher dispatches it to the crew member's site.
    dina.sign_in("dina")
    dina.go(f"/activities/{aid}")
    dform = dina.page.locator('[data-form="dispatch"]')
    dform.get_by_label("Gateway").select_option(GW)
    dform.get_by_role("button", name="Dispatch").click()
    expect(dina.page.locator(".flash")).to_contain_text("Dispatched")
    expect(dina.page.locator(".pill.offline")).to_be_visible()
    timeline = dina.page.locator("[data-timeline]")
    expect(timeline.locator('[data-event="created"]')).to_contain_text("ada")
    expect(timeline.locator('[data-event="approved"]')).to_contain_text("with their password")
    expect(timeline.locator('[data-event="dispatched"]')).to_contain_text(GW)
    dina.screenshot("activity")
    dina.go("/activities?state=offline")
    expect(dina.page.locator(f'tr[data-activity="{aid}"]')).to_contain_text(GW)
    dina.screenshot("activities-offline")
    # A dispatcher may not change users or read the audit log.
    answer = dina.post_form("/users/cruz", {"role": "admin"})
    assert answer.status == 403 and "may not create or change users" in answer.text()
    dina.go("/audit")
    expect(dina.page.locator("[data-refused]")).to_contain_text("may not read the audit log")

    # A viewer sees the activity and the fleet, and may do nothing to them.
    vera.sign_in("vera")
    vera.go(f"/activities/{aid}")
    expect(vera.page.locator('[data-form="recall"]')).to_have_count(0)
    answer = vera.post_form(f"/activities/{aid}/recall", {"reason": "no"})
    assert answer.status == 403 and "Your role (viewer) may not dispatch or recall" in answer.text()
    vera.go("/fleet")
    expect(vera.page.locator("h1")).to_have_text("Fleet")
    vera.no_horizontal_overflow()
    vera.screenshot("fleet")

    # Everything that was done is in the audit log, with who and from where.
    ada.go("/audit")
    log = ada.page.locator('[data-list="audit"]')
    expect(log.locator('tr[data-action="activity.dispatch"]')).to_contain_text("dina")
    expect(log.locator('tr[data-action="activity.approve"]')).to_contain_text("cruz")
    expect(log.locator('tr[data-action="user.create"]').first).to_contain_text("127.0.0.1")
    expect(log.locator('tr[data-action="type.create"] a')).to_have_attribute(
        "href", "/types/inspection"
    )
    ada.screenshot("audit")
    ada.go("/account")
    ada.page.get_by_label("Name").fill("nightly report")
    ada.page.get_by_role("button", name="Create token").click()
    expect(ada.page.locator("[data-token]")).to_contain_text("op_")
    ada.screenshot("account")
    ada.go("/fleet")
    ada.screenshot("fleet")

    # The phone sizes of the pages a person opens on the go.
    vera.go("/activities")
    vera.no_horizontal_overflow()
    vera.go(f"/activities/{aid}")
    vera.no_horizontal_overflow()
    vera.screenshot("activity")
    out = platform_bridge.api("GET", f"/api/v1/activities/{aid}")
    assert out["state"] == "offline" and out["holder_gateway"] == GW
    assert out["approver"] == "cruz" and out["approved_via"] == "password"


def test_sign_in_page(people: dict[str, Person]) -> None:
    vera = people["vera"]
    vera.go("/fleet")
    expect(vera.page.get_by_role("heading", name="Sign in to Outpost")).to_be_visible()
    vera.no_horizontal_overflow()
    vera.screenshot("signin")
    vera.page.get_by_label("User name").fill("vera")
    vera.page.get_by_label("Password").fill("wrong")
    vera.page.get_by_role("button", name="Sign in").click()
    expect(vera.page.locator(".error")).to_have_text("The username or password is wrong.")
    vera.page.get_by_label("Password").fill("platform test password")
    vera.page.get_by_role("button", name="Sign in").click()
    expect(vera.page.locator("h1")).to_have_text("Fleet")
    assert vera.page.url.endswith("/fleet")  # back where she was going
    people["ada"].go("/signin")
    people["ada"].screenshot("signin")
