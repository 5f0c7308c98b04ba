"""An XLSForm from the Activity types page to a crew's phone and back (issue 17), in Chromium.

An admin uploads tests/data/inspection.xlsx on the platform's page (a copy
with a geotrace first: refused, naming its row and column), sees the preview
in English and Portuguese; the activity is dispatched to a real gateway; the
crew fills it in on a 390 px phone: skip logic shows and hides, a constraint
refuses a bad answer with the form's message, rows of a repeat and their sum,
a photo and a signature; central holds what the crew entered.
"""

from __future__ import annotations

import hashlib
import io
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from cloud_bridge.xlsform import XLSX_CONTENT_TYPE
from tests.cloud_bridge.xlsform_books import INSPECTION
from tests.data.make_inspection_xlsform import build
from tests.gateway.conftest import PASSWORDS
from tests.support.broker import Broker
from tests.web.conftest import GatewayProcess, new_phone, png_photo
from tests.web.platform import Person, PlatformBridge, platform_bridge  # noqa: F401
from tests.web.steps import attach_photo, confirm, draw_signature, head_badge, wait_until

pytestmark = pytest.mark.browser
GW = "site-xls"


@pytest.fixture
def gateway(tmp_path: Path, broker: Broker) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path / "gateway", mqtt={"host": broker.host, "port": broker.port})
    gw.gateway_id = GW
    gw.write_config()
    gw.start()
    yield gw
    gw.stop()


def with_a_geotrace() -> bytes:
    """The inspection with an unsupported question on survey row 5."""
    wb = build()
    survey = wb["survey"]
    survey.insert_rows(5)
    for column, value in enumerate(("geotrace", "route", "Route walked", "Percurso"), start=1):
        survey.cell(row=5, column=column, value=value)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def upload(page: Any, name: str, data: bytes) -> None:
    form = page.locator('[data-form="xlsform"]')
    form.get_by_label("XLSForm spreadsheet (.xlsx)").set_input_files(
        files=[{"name": name, "mimeType": XLSX_CONTENT_TYPE, "buffer": data}]
    )
    form.get_by_role("button", name="Import XLSForm").click()


def _field(page: Any, key: str) -> Any:
    return page.locator(f"[data-field='{key}']")


def test_an_xlsform_from_the_page_to_the_phone_and_back(
    chromium_browser: Any,
    platform_bridge: PlatformBridge,  # noqa: F811
    gateway: GatewayProcess,
) -> None:
    b = platform_bridge
    b.person("ada", "admin", display_name="Ada Admin")
    b.api(
        "PUT",
        "/api/v1/users/alice",
        {"password": PASSWORDS["alice"], "role": "crew", "offline": True, "sites": [GW]},
    )
    ada = Person.open(chromium_browser, b.url)
    phone = new_phone(chromium_browser)
    try:
        # 1. The admin uploads the workbook on the Activity types page.
        ada.sign_in("ada")
        ada.go("/types")
        page = ada.page
        upload(page, "inspection-draft.xlsx", with_a_geotrace())
        problems = page.locator("[data-xlsform-problems]")
        expect(problems).to_contain_text("survey row 5, column type: 'geotrace' is not supported")
        expect(page.locator("[data-error]")).to_contain_text("The XLSForm was not imported")
        ada.screenshot("types-xlsform-refused")
        assert b.api("GET", "/api/v1/activity-types")["activity_types"] == []
        upload(page, "inspection.xlsx", INSPECTION.read_bytes())
        expect(page.locator(".flash")).to_contain_text("The XLSForm is imported")
        assert page.url.split("?")[0].endswith("/types/site_inspection")
        expect(page.locator('[data-preview-field="site_name"]')).to_contain_text("Site name")
        expect(page.locator('[data-preview-table="readings"]')).to_be_visible()
        ada.screenshot("type-xlsform")
        page.get_by_role("link", name="pt", exact=True).click()
        expect(page.locator('[data-preview-field="site_name"]')).to_contain_text("Nome do local")
        # On a phone too: the upload and its problems fit a 390 px screen.
        ada_phone = Person.open(chromium_browser, b.url, phone=True)
        try:
            ada_phone.sign_in("ada")
            ada_phone.go("/types/site_inspection")
            upload(ada_phone.page, "inspection-draft.xlsx", with_a_geotrace())
            expect(ada_phone.page.locator("[data-xlsform-problems]")).to_contain_text(
                "survey row 5, column type: 'geotrace' is not supported"
            )
            ada_phone.no_horizontal_overflow()
            ada_phone.page.locator("#xlsform-upload").scroll_into_view_if_needed()
            ada_phone.screenshot("type-xlsform-refused")
        finally:
            ada_phone.close()
        assert b.api("GET", "/api/v1/activity-types/site_inspection")["form_version"] == 1

        # 2. An activity of the type, approved and dispatched (the API, as a script would).
        made = b.api(
            "POST",
            "/api/v1/activities",
            {"title": "North substation", "type": "site_inspection", "responsible": "alice"},
        )
        aid = made["id"]
        b.api("POST", f"/api/v1/activities/{aid}/approve", {"approver": "alice"})
        b.api("POST", f"/api/v1/activities/{aid}/dispatch", {"gateway_id": GW})

        def at_gateway() -> bool:
            try:
                found = gateway.call("GET", "/api/v1/activities", gateway.token())
            except urllib.error.HTTPError:
                return False  # the user push has not arrived yet
            return any(a["id"] == aid for a in found["activities"])

        wait_until(at_gateway, 30, "the crew and the activity to reach the gateway")

        # 3. The crew fills it in on the phone.
        p = phone.page
        assert p.viewport_size == {"width": 390, "height": 844}
        phone.may_happen.append(f"404 (Not Found) ({gateway.lan_url}/api/v1/activities/{aid})")
        phone.sign_in(gateway.lan_url)
        p.click(f"[data-activity='{aid}']")
        expect(p.get_by_role("heading", name="Site", exact=True)).to_be_visible()
        p.get_by_label("Site name").fill("North substation")
        p.get_by_label("Date of inspection").fill("2026-12-01")
        p.get_by_label("Arrival time").fill("09:30")
        # Skip logic: the hazard only when unsafe, the equipment only when safe.
        safe = p.get_by_role("group", name="Is the site safe to work on?")
        expect(_field(p, "hazard")).to_be_hidden()
        expect(p.locator("[data-group=equipment]")).to_be_hidden()
        safe.get_by_role("radio", name="No").check()
        expect(_field(p, "hazard")).to_be_visible()
        p.get_by_label("Describe the hazard").fill("Loose cable at the gate")
        safe.get_by_role("radio", name="Yes").check()
        expect(_field(p, "hazard")).to_be_hidden()
        expect(p.locator("[data-group=equipment]")).to_be_visible()
        ppe = p.get_by_role("group", name="Protective equipment worn")
        ppe.get_by_role("checkbox", name="Helmet").check()
        ppe.get_by_role("checkbox", name="Safety boots").check()
        # A constraint refuses a bad answer with the form's own message.
        meters = p.get_by_label("How many meters are on site?")
        expect(meters).to_have_value("1")  # the workbook's default, once its section shows
        meters.fill("99")
        expect(_field(p, "meters_expected").locator(".field-error")).to_have_text(
            "Between 0 and 50 meters"
        )
        meters.fill("2")
        expect(_field(p, "meters_expected").locator(".field-error")).to_have_text("")
        # The repeat: two readings; a reading past 500 is refused; a faulty meter asks why.
        add = p.get_by_role("button", name="Add meter readings row")
        add.click()
        _field(p, "readings.0.meter").locator("input").fill("M1")
        reading = _field(p, "readings.0.reading").locator("input")
        reading.fill("600")
        expect(_field(p, "readings.0.reading").locator(".field-error")).to_have_text(
            "A reading is between 0 and 500 kWh"
        )
        phone.screenshot("40-xlsform-constraint", scroll_to="[data-field='readings.0.reading']")
        reading.fill("120.5")
        _field(p, "readings.0.condition").get_by_role("radio", name="Working").check()
        add.click()
        _field(p, "readings.1.meter").locator("input").fill("M2")
        _field(p, "readings.1.reading").locator("input").fill("80")
        expect(_field(p, "readings.1.fault")).to_be_hidden()
        _field(p, "readings.1.condition").get_by_role("radio", name="Faulty").check()
        expect(_field(p, "readings.1.fault")).to_be_visible()
        _field(p, "readings.1.fault").locator("input, textarea").first.fill("Cracked glass")
        # The sign-off: a photo, notes, the acknowledgement and a signature.
        photo = png_photo(240, 180)
        photo_sha = hashlib.sha256(photo).hexdigest()
        attach_photo(p, photo)
        p.get_by_label("Notes").fill("Meters read; M2 needs a new cover.")
        p.get_by_label("I confirm this inspection is complete and true").check()
        draw_signature(p)
        expect(p.locator("[data-field='total_note']")).to_contain_text(
            "Total of the readings: 200.5 kWh"
        )
        phone.screenshot("41-xlsform-sign-off", scroll_to="[data-group=sign_off]")
        p.get_by_role("button", name="Mark completed").click()
        confirm(p, "Mark completed")
        expect(head_badge(p)).to_contain_text("Applied", timeout=30_000)

        # 4. Central holds what the crew entered (and not the hidden hazard).
        def record() -> dict[str, Any]:
            return dict(b.api("GET", f"/api/v1/activities/{aid}/record"))

        got = wait_until(
            lambda: (r := record())["record"] and not r["missing_attachments"] and r,
            40,
            "the record and its files at central",
        )
        rec = got["record"]
        assert rec["site_name"] == "North substation"
        assert rec["inspection_date"] == "2026-12-01"
        assert rec["arrival_time"].startswith("09:30")
        assert rec["site_safe"] == "yes" and rec.get("hazard") is None
        assert sorted(rec["ppe"]) == ["boots", "helmet"]
        assert rec["meters_expected"] == 2
        assert rec["total_reading"] == "200.5"
        assert rec["site_photo"] == photo_sha
        assert rec["confirm"] is True
        assert len(rec["signature"]) == 64 and rec["signature"] != photo_sha
        assert rec["notes"] == "Meters read; M2 needs a new cover."
        rows = got["tables"]["readings"]
        assert [(r["meter"], r["reading"], r["condition"]) for r in rows] == [
            ("M1", 120.5, "ok"),
            ("M2", 80, "fault"),
        ]
        assert rows[0].get("fault") is None and rows[1]["fault"] == "Cracked glass"
    finally:
        ada.close()
        phone.context.close()
    assert not phone.unexpected_errors(), phone.unexpected_errors()
