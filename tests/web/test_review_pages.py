"""The Activity types, Rejections and Exports pages in Chromium, on a real bridge process.

Rejections come from the real path: envelopes published over the broker as
a gateway would (stale ``base_version``, then a corrected one), replayed by
the bridge. Each page is checked on a desktop and a 390 px phone (no
horizontal overflow, no console error), and for the roles that may not use it.
"""

from __future__ import annotations

import csv
import io
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import expect

from outpost.wire import topics
from outpost.wire.codec import decode, encode
from outpost.wire.schemas import EnvelopeBatch, WireEnvelope
from tests.support.broker import Broker
from tests.web.platform import Person, PlatformBridge, platform_bridge  # noqa: F401

pytestmark = pytest.mark.browser
GW = "site-pages"
FORM = {
    "fields": [
        {"name": "site_ok", "type": "boolean", "required": True},
        {"name": "notes", "type": "text", "label": "Notes"},
        {"name": "weather", "type": "choice", "options": ["dry", "wet"]},
    ],
    "tables": [{"name": "readings", "fields": [{"name": "value", "type": "number"}]}],
}


class FieldGateway:
    """A gateway as the bridge sees it on the broker (paho, its own subtree)."""

    def __init__(self, broker: Broker) -> None:
        self.results: list[Any] = []
        self.dispatches: list[Any] = []
        self.got = threading.Condition()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"fake-{GW}", protocol=paho.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(topics.topic(GW, "down/#"), qos=1)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        message = decode(msg.payload)
        with self.got:
            if message.kind == "envelope_results":
                self.results.extend(message.results)
            elif message.kind == "dispatch":
                self.dispatches.append(message)
            self.got.notify_all()

    def wait(self, what: str, n: int) -> list[Any]:
        with self.got:
            assert self.got.wait_for(lambda: len(getattr(self, what)) >= n, 20), what
            return list(getattr(self, what))

    def send(self, activity_id: str, seq: int, base_version: int, status: str) -> str:
        now = datetime.now(UTC)
        env = WireEnvelope(
            envelope_id=uuid.uuid4(),
            activity_id=activity_id,
            seq=seq,
            base_version=base_version,
            status=status,  # type: ignore[arg-type]
            created_at=now,
            received_at=now,
            author="cruz",
            form_version=1,
            record={"site_ok": True, "notes": f"save {seq}", "weather": "dry"},
            tables={"readings": [{"value": 1.5}]},
            attachments=[],
        )
        batch = EnvelopeBatch(gateway_id=GW, batch_id=uuid.uuid4(), sent_at=now, envelopes=[env])
        self.client.publish(topics.topic(GW, topics.UP_ENVELOPES), encode(batch), qos=1)
        return str(env.envelope_id)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def field(
    platform_bridge: PlatformBridge,  # noqa: F811
    broker: Broker,
) -> Iterator[tuple[PlatformBridge, dict[str, str]]]:
    """Two activities of type inspection that came back from the field with a rejection:
    ``fixed`` (a corrected save applied after it) and ``open`` (still open)."""
    b = platform_bridge
    b.api("POST", "/api/v1/activity-types", {"name": "inspection", "offline": True, "form": FORM})
    b.person("ada", "admin")
    b.person("vera", "viewer")
    b.person("cruz", "crew", offline=True, sites=[GW])
    gw = FieldGateway(broker)
    ids: dict[str, str] = {}
    try:
        for n, key in enumerate(("fixed", "open"), start=1):
            act = b.api(
                "POST",
                "/api/v1/activities",
                {"title": f"Pump {key}", "type": "inspection", "responsible": "cruz"},
            )
            ids[key] = act["id"]
            b.api("POST", f"/api/v1/activities/{act['id']}/approve", {"approver": "cruz"})
            b.api("POST", f"/api/v1/activities/{act['id']}/dispatch", {"gateway_id": GW})
            version = gw.wait("dispatches", n)[-1].activity.version
            gw.send(act["id"], 1, version + 9, "completed")  # edited from a stale version
            gw.wait("results", 2 * n - 1)
            if key == "fixed":
                gw.send(act["id"], 2, version, "completed")
                gw.wait("results", 2 * n)
        yield b, ids
    finally:
        gw.close()


def test_rejections_page(
    chromium_browser: Any, field: tuple[PlatformBridge, dict[str, str]]
) -> None:
    b, _ids = field
    for phone in (False, True):
        ada = Person.open(chromium_browser, b.url, phone=phone)
        try:
            ada.sign_in("ada")
            ada.page.get_by_role("link", name="Rejections").click()
            rows = ada.page.locator('[data-list="rejections"] tbody tr')
            expect(rows).to_have_count(2)
            expect(rows.nth(0)).to_contain_text("Pump open")
            expect(rows.nth(0).locator("[data-after]")).to_contain_text("still open")
            expect(rows.nth(1).locator("[data-after]")).to_contain_text("corrected: save 2")
            expect(rows.nth(1)).to_contain_text("conflict")
            expect(rows.nth(1)).to_contain_text(GW)
            expect(rows.nth(1)).to_contain_text("cruz")
            ada.no_horizontal_overflow()
            ada.screenshot("rejections")
            ada.page.get_by_label("Only those still open").check()
            ada.page.get_by_role("button", name="Filter").click()
            expect(rows).to_have_count(1)
            expect(rows.nth(0)).to_contain_text("Pump open")
        finally:
            ada.close()


def test_activity_types_page(
    chromium_browser: Any, field: tuple[PlatformBridge, dict[str, str]]
) -> None:
    b, _ids = field
    ada = Person.open(chromium_browser, b.url)
    try:
        ada.sign_in("ada")
        page = ada.page
        page.get_by_role("link", name="Activity types").click()
        expect(page.locator('tr[data-type="inspection"]')).to_contain_text("may go offline")
        ada.screenshot("types")
        # Not JSON at all: the line and column.
        page.get_by_label("Name").fill("pump_check")
        page.get_by_label("Form definition (JSON)").fill('{"fields": [}')
        page.get_by_role("button", name="Create type").click()
        expect(page.locator("[data-error]")).to_contain_text("not valid JSON")
        expect(page.locator("[data-error]")).to_contain_text("line 1")
        # The typed text stays to be corrected.
        expect(page.get_by_label("Form definition (JSON)")).to_have_value('{"fields": [}')

        page.locator('tr[data-type="inspection"] a').click()
        expect(page.locator('[data-preview-field="notes"]')).to_contain_text("Notes")
        expect(page.locator('[data-preview-field="weather"] .pv-btn')).to_have_count(2)
        expect(page.locator('[data-preview-field="notes"] input')).to_be_visible()
        # A bad edit names the field and keeps the text.
        edit = page.locator('[data-form="type-edit"]')
        changed = json.loads(edit.get_by_label("Form definition (JSON)").input_value())
        changed["fields"].append({"name": "Depth M", "type": "number"})
        edit.get_by_label("Form definition (JSON)").fill(json.dumps(changed))
        edit.get_by_role("button", name="Save").click()
        expect(page.locator("[data-error]")).to_contain_text("field 'Depth M' (form.fields[3])")
        changed["fields"][-1]["name"] = "depth_m"
        edit = page.locator('[data-form="type-edit"]')
        edit.get_by_label("Form definition (JSON)").fill(json.dumps(changed))
        edit.get_by_role("button", name="Save").click()
        expect(page.locator(".flash")).to_have_text("Saved.")
        versions = page.locator('[data-list="versions"] tbody tr')
        expect(versions).to_have_count(2)
        expect(page.locator('[data-preview-field="depth_m"]')).to_be_visible()
        versions.nth(1).get_by_role("link", name="preview").click()
        expect(page.locator("h2").first).to_contain_text("Preview of version 1")
        expect(page.locator('[data-preview-field="depth_m"]')).to_have_count(0)
        ada.screenshot("type-versions")
        # The offline switch.
        page.locator('[data-form="offline"] button').click()
        expect(page.locator(".summary")).to_contain_text("online only")
        out = b.api("GET", "/api/v1/activity-types/inspection")
        assert out["offline"] is False and out["form_version"] == 2
        assert [v["created_by"] for v in out["versions"]] == ["ada", None]
    finally:
        ada.close()
    vera = Person.open(chromium_browser, b.url, phone=True)
    try:
        vera.sign_in("vera")
        vera.go("/types/inspection")
        expect(vera.page.locator('[data-preview-field="notes"]')).to_be_visible()
        expect(vera.page.locator('[data-form="type-edit"]')).to_have_count(0)
        vera.no_horizontal_overflow()
        vera.screenshot("type")
        answer = vera.post_form("/types/inspection/offline", {"offline": "1"})
        assert answer.status == 403 and "Your role (viewer) may not" in answer.text()
        vera.go("/exports")
        expect(vera.page.locator("[data-refused]")).to_contain_text("Your role (viewer) may not")
    finally:
        vera.close()


def test_exports_page(chromium_browser: Any, field: tuple[PlatformBridge, dict[str, str]]) -> None:
    b, ids = field
    for phone in (False, True):
        ada = Person.open(chromium_browser, b.url, phone=phone)
        try:
            ada.sign_in("ada")
            ada.page.get_by_role("link", name="Exports").click()
            card = ada.page.locator('[data-export="inspection"]')
            expect(card).to_contain_text("1 record")
            ada.no_horizontal_overflow()
            ada.screenshot("exports")
            card.get_by_label("What").select_option("records")
            with ada.page.expect_download() as info:
                card.get_by_role("button", name="Download").click()
            text = Path(info.value.path()).read_text(encoding="utf-8")
            rows = list(csv.DictReader(io.StringIO(text)))
            assert [r["activity_id"] for r in rows] == [ids["fixed"]]
            assert rows[0]["notes"] == "save 2"
        finally:
            ada.close()
    ada = Person.open(chromium_browser, b.url)
    try:
        ada.sign_in("ada")
        ada.go("/exports/download?type=inspection&what=zip&from=yesterday")
        expect(ada.page.locator("[data-error]")).to_contain_text("from must be a date")
    finally:
        ada.close()
