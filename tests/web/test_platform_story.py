"""Issue 14's whole story in Chromium, with real processes (SQLite and PostgreSQL central).

An admin defines an activity type on the Activity types page, creates a crew
member and an activity; the crew member signs in to the platform on a phone
and approves it with their password; a dispatcher dispatches it; the crew
completes it in the gateway's web app with a photo (real gateway, real
broker, real bridge); the record, the photo and the timeline appear on the
activity page; the dispatcher sends it back with a note; the crew sees the
note on the phone, corrects and completes it; the second round is applied;
the export ZIP holds both CSVs and the photo.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import urllib.error
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.gateway.conftest import PASSWORDS
from tests.support.broker import Broker
from tests.web.conftest import FORM, GatewayProcess, new_phone, png_photo
from tests.web.platform import Person, PlatformBridge, platform_bridge  # noqa: F401
from tests.web.steps import attach_photo, confirm, head_badge, wait_until

pytestmark = pytest.mark.browser
GW = "site-web"
NOTE = "The photo shows rust on the gate hinge: say what you did about it."
STORY_FORM = {
    "fields": [
        {"name": "site_ok", "type": "boolean", "required": True, "label": "Site is safe"},
        {"name": "notes", "type": "text"},
        {"name": "photo", "type": "attachment", "label": "Photo of the gate"},
    ],
    "tables": [
        {
            "name": "readings",
            "fields": [
                {"name": "meter", "type": "text", "required": True},
                {"name": "value", "type": "number"},
            ],
        }
    ],
}
assert FORM  # the web tests' full form stays the one of tests/web/conftest.py


@pytest.fixture
def gateway(tmp_path: Path, broker: Broker) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path / "gateway", mqtt={"host": broker.host, "port": broker.port})
    gw.gateway_id = GW
    gw.write_config()
    gw.start()
    yield gw
    gw.stop()


def _record(b: PlatformBridge, aid: str) -> dict[str, Any]:
    return dict(b.api("GET", f"/api/v1/activities/{aid}/record"))


def test_the_whole_story_from_a_new_type_to_the_export(
    chromium_browser: Any,
    platform_bridge: PlatformBridge,  # noqa: F811
    gateway: GatewayProcess,
) -> None:
    b = platform_bridge
    b.person("ada", "admin", display_name="Ada Admin")
    b.person("dina", "dispatcher", display_name="Dina Dispatch")
    ada = Person.open(chromium_browser, b.url)
    dina = Person.open(chromium_browser, b.url)
    alice_web = Person.open(chromium_browser, b.url, phone=True)
    phone = new_phone(chromium_browser)
    try:
        # 1. The admin defines the type on the Activity types page; a bad definition is
        #    refused naming the field, then the good one is created with its preview.
        ada.sign_in("ada")
        ada.go("/types")
        page = ada.page
        page.get_by_label("Name").fill("inspection")
        page.get_by_label("Crews may take activities of this type offline").check()
        bad = {"fields": [{"name": "site_ok", "type": "yes_no"}]}
        page.get_by_label("Form definition (JSON)").fill(json.dumps(bad))
        page.get_by_role("button", name="Create type").click()
        expect(page.locator("[data-error]")).to_contain_text("field 'site_ok' (form.fields[0])")
        page.get_by_label("Form definition (JSON)").fill(json.dumps(STORY_FORM, indent=2))
        page.get_by_role("button", name="Create type").click()
        expect(page.locator(".flash")).to_have_text("Created.")
        expect(page.locator('[data-preview-field="site_ok"]')).to_contain_text("Site is safe")
        expect(page.locator('[data-preview-table="readings"]')).to_be_visible()
        ada.screenshot("type")

        # 2. ... the crew member (may work offline, at this gateway) and the activity.
        ada.go("/users/new")
        page.get_by_label("User name").fill("alice")
        page.get_by_label("Full name").fill("Alice Field")
        page.get_by_label("Password").fill(PASSWORDS["alice"])
        page.get_by_label("Role").select_option("crew")
        page.get_by_label("May work offline").check()
        page.get_by_label("Other gateway ids").fill(GW)
        page.get_by_role("button", name="Create user").click()
        expect(page.locator(".flash")).to_have_text("Created.")
        ada.go("/activities/new")
        page.get_by_label("Title").fill("North gate inspection")
        page.get_by_label("Type").select_option("inspection")
        page.get_by_label("Responsible user").select_option("alice")
        page.get_by_role("button", name="Create").click()
        expect(page.locator(".flash")).to_have_text("Created.")
        aid = page.url.split("?")[0].rsplit("/", 1)[1]

        # 3. The responsible crew member approves it on the platform with their password.
        alice_web.sign_in("alice", PASSWORDS["alice"])
        alice_web.go(f"/activities/{aid}")
        form = alice_web.page.locator('[data-form="approve"]')
        form.get_by_label("Your password, to approve").fill(PASSWORDS["alice"])
        form.get_by_role("button", name="Approve").click()
        expect(alice_web.page.locator(".flash")).to_contain_text("Approved")

        # 4. The dispatcher dispatches it to the crew's gateway.
        dina.sign_in("dina")
        dina.go(f"/activities/{aid}")
        dform = dina.page.locator('[data-form="dispatch"]')
        dform.get_by_label("Gateway").select_option(GW)
        dform.get_by_role("button", name="Dispatch").click()
        expect(dina.page.locator(".flash")).to_contain_text("Dispatched")

        def at_gateway() -> bool:
            try:
                found = gateway.call("GET", "/api/v1/activities", gateway.token())
            except urllib.error.HTTPError:
                return False  # the user push has not arrived yet
            return any(a["id"] == aid for a in found["activities"])

        wait_until(at_gateway, 30, "the crew and the activity to reach the gateway")

        # 5. The crew completes it in the gateway's web app, with a photo.
        p = phone.page
        phone.may_happen.append(f"404 (Not Found) ({gateway.lan_url}/api/v1/activities/{aid})")
        phone.sign_in(gateway.lan_url)
        p.click(f"[data-activity='{aid}']")
        p.get_by_role("radio", name="Yes").check()
        p.get_by_label("Notes").fill("Gate fine.")
        photo = png_photo(240, 180)
        sha = hashlib.sha256(photo).hexdigest()
        attach_photo(p, photo)
        p.get_by_role("button", name="Add readings row").click()
        p.get_by_label("Meter").fill("G1")
        p.get_by_label("Value").fill("12.5")
        p.get_by_role("button", name="Mark completed").click()
        confirm(p, "Mark completed")
        expect(head_badge(p)).to_contain_text("Applied", timeout=30_000)

        # 6. Record, photo and timeline on the activity page.
        wait_until(
            lambda: not _record(b, aid)["missing_attachments"] and _record(b, aid)["record"],
            40,
            "the record and its photo at central",
        )
        dina.go(f"/activities/{aid}")
        expect(dina.page.locator("[data-record]")).to_contain_text("Gate fine.")
        expect(dina.page.locator(f'img[src="/attachments/{sha}"]')).to_be_visible()
        timeline = dina.page.locator("[data-timeline]")
        expect(timeline.locator('[data-event="envelope"]')).to_have_count(1)
        expect(timeline.locator('[data-event="checked in"]')).to_have_count(1)
        expect(dina.page.locator("#review")).to_contain_text("awaiting review")

        # 7. The dispatcher sends it back with a note.
        box = dina.page.locator('[data-form="review"]')
        box.get_by_label("Has issues: send it back to the crew with a note").check()
        box.get_by_label("Note for the crew (needed to send it back)").fill(NOTE)
        dina.screenshot("activity-review")
        box.get_by_role("button", name="Record the review").click()
        expect(dina.page.locator(".flash")).to_contain_text("Sent back")
        expect(dina.page.locator("#review")).to_contain_text("has issues")
        expect(dina.page.locator(".pill.offline")).to_be_visible()

        # 8. The crew sees the note on the phone, corrects and completes again.
        p.get_by_role("link", name="Activities", exact=True).click()
        expect(p.locator(f"[data-activity='{aid}'] .badge")).to_contain_text(
            "Sent back", timeout=30_000
        )
        p.click(f"[data-activity='{aid}']")
        expect(p.locator("#review-note")).to_contain_text(NOTE)
        expect(p.get_by_label("Notes")).to_have_value("Gate fine.")
        p.get_by_label("Notes").fill("Hinge rust treated and greased.")
        p.get_by_role("button", name="Mark completed").click()
        confirm(p, "Mark completed")
        expect(head_badge(p)).to_contain_text("Applied", timeout=30_000)

        # 9. The second round is applied; both rounds are on the activity page.
        wait_until(
            lambda: _record(b, aid)["record"]["notes"] == "Hinge rust treated and greased.",
            30,
            "the second round at central",
        )
        dina.go(f"/activities/{aid}")
        expect(dina.page.locator("[data-record]")).to_contain_text("Hinge rust treated")
        rounds = dina.page.locator("[data-rounds] > li")
        expect(rounds).to_have_count(2)
        expect(rounds.nth(1)).to_contain_text(NOTE)
        expect(dina.page.locator('[data-timeline] [data-event="envelope"]')).to_have_count(2)
        expect(dina.page.locator('[data-timeline] [data-event="reviewed"]')).to_contain_text("dina")

        # 10. The export ZIP holds both CSVs and the photo.
        ada.go("/exports")
        card = ada.page.locator('[data-export="inspection"]')
        card.get_by_label("What").select_option("zip")
        ada.screenshot("exports")
        with ada.page.expect_download() as info:
            card.get_by_role("button", name="Download").click()
        data = Path(info.value.path()).read_bytes()
        zf = zipfile.ZipFile(io.BytesIO(data))
        names = zf.namelist()
        records = next(n for n in names if n.endswith("/records.csv"))
        readings = next(n for n in names if n.endswith("/readings.csv"))
        assert any(n.endswith(f"/attachments/{sha}.png") for n in names), names
        rows = list(csv.DictReader(io.StringIO(zf.read(records).decode())))
        assert [r["notes"] for r in rows] == ["Hinge rust treated and greased."]
        assert rows[0]["photo"] == sha and rows[0]["activity_id"] == aid
        table = list(csv.DictReader(io.StringIO(zf.read(readings).decode())))
        assert table == [{"activity_id": aid, "row": "1", "meter": "G1", "value": "12.5"}]
        photo_name = next(n for n in names if n.endswith(".png"))
        assert zf.read(photo_name) == photo

        # The audit log names who reviewed it.
        ada.go("/audit")
        expect(ada.page.locator('tr[data-action="activity.review"]')).to_contain_text("dina")
    finally:
        for person in (ada, dina, alice_web):
            person.close()
        phone.context.close()
    assert not phone.unexpected_errors(), phone.unexpected_errors()
