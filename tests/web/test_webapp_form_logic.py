"""A form with logic in the crew's web app, on a 390 px phone (Chromium).

The inspection form of tests/data/form_logic_conformance.json: fields show
and hide as the crew answers (a hidden answer is dropped), a bad answer is
refused with the form's message and the message goes as soon as it is fixed,
"Mark completed" focuses the first field to fix, calculations fill
themselves, and a Portuguese phone reads the form's Portuguese labels. What
reaches the gateway is what the crew entered, and it passes the gateway's
own check of the same logic.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from gateway.app import store_for
from gateway.config import load as load_gateway_config
from gateway.store.activities import upsert_activity
from gateway.store.users import replace_users
from outpost.forms import FormDefinition
from tests.gateway.conftest import DISPATCHED_AT, PASSWORDS, activity, user_push
from tests.support.store_tasks import SqlWrite
from tests.web.conftest import Crew, GatewayProcess, chromium_missing, new_phone
from tests.web.steps import confirm, envelopes_at_gateway, head_badge, wait_until

pytestmark = pytest.mark.browser

CASES = json.loads(
    (Path(__file__).parents[1] / "data" / "form_logic_conformance.json").read_text("utf-8")
)
FORM = FormDefinition.model_validate(CASES["forms"]["inspection"])
# A default inside a section that starts hidden; a note that quotes a calculation.
METERS = FormDefinition.model_validate(
    {
        "groups": [{"name": "equipment", "label": "Equipment", "relevant": "${has_power} = 'yes'"}],
        "fields": [
            {"name": "has_power", "type": "choice", "options": ["yes", "no"]},
            {"name": "meters", "type": "integer", "default": 1, "group": "equipment"},
            {"name": "kwh", "type": "number", "group": "equipment", "label": "Reading"},
            {"name": "total", "type": "calculate", "calculation": "${meters} * ${kwh}"},
            {"name": "total_note", "type": "note", "label": "Total: ${total} kWh"},
        ],
    }
)


class LogicGateway(GatewayProcess):
    def seed(self) -> None:
        def work(conn: Any) -> None:
            replace_users(conn, user_push("alice", "bob"))
            for act_id in ("logic-1", "logic-2"):
                upsert_activity(conn, activity(act_id, "alice", FORM), "alice", DISPATCHED_AT)
            upsert_activity(conn, activity("logic-3", "alice", METERS), "alice", DISPATCHED_AT)

        def seed_store() -> None:
            store = store_for(load_gateway_config(self.config_path)).open()
            try:
                store.write_sync(SqlWrite(work))
            finally:
                store.close()

        with ThreadPoolExecutor(1) as pool:
            pool.submit(seed_store).result()


@pytest.fixture(scope="module")
def logic_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    if reason := chromium_missing():
        pytest.skip(reason)
    gw = LogicGateway(tmp_path_factory.mktemp("logic") / "gateway")
    gw.write_config()
    gw.seed()
    gw.start()
    yield gw
    gw.stop()


def _field(page: Any, key: str) -> Any:
    return page.locator(f"[data-field='{key}']")


def test_logic_shows_hides_refuses_clears_and_sends_what_was_entered(
    logic_gateway: GatewayProcess, crew: Crew
) -> None:
    gw, page = logic_gateway, crew.page
    assert page.viewport_size == {"width": 390, "height": 844}
    crew.sign_in(gw.lan_url)
    page.click("[data-activity=logic-1]")
    expect(page.get_by_role("heading", name="The site")).to_be_visible()

    # Relevance: the hazard is asked only when the site is not safe.
    expect(_field(page, "hazard")).to_be_hidden()
    site = page.get_by_role("group", name="Is the site safe?")
    site.get_by_role("radio", name="No").check()
    expect(_field(page, "hazard")).to_be_visible()
    page.get_by_label("Describe the hazard").fill("loose cable")
    site.get_by_role("radio", name="Yes").check()
    expect(_field(page, "hazard")).to_be_hidden()
    site.get_by_role("radio", name="No").check()
    # Its answer was dropped when it was hidden, not kept for later.
    expect(page.get_by_label("Describe the hazard")).to_have_value("")
    site.get_by_role("radio", name="Yes").check()

    # A group with relevance: the Power section comes with power.
    expect(page.locator("[data-group=power]")).to_be_hidden()
    page.get_by_role("group", name="Is there power?").get_by_role("radio", name="Yes").check()
    expect(page.locator("[data-group=power]")).to_be_visible()

    # A constraint's message appears as the crew types, and goes when fixed.
    reading = page.get_by_label("Meter reading")
    reading.fill("600")
    error = _field(page, "reading").locator(".field-error")
    expect(error).to_have_text("A reading is between 0 and 500.")
    expect(reading).to_have_attribute("aria-invalid", "true")
    crew.screenshot("30-form-logic-constraint", scroll_to="[data-field=has_power]")
    reading.fill("230.5")
    expect(error).to_have_text("")
    expect(reading).not_to_have_attribute("aria-invalid", "true")

    # Multichoice and required-if: two checks with the roof need roof notes.
    checks = page.get_by_role("group", name="What was checked?")
    expect(_field(page, "roof_note")).to_be_hidden()
    checks.get_by_role("checkbox", name="roof").check()
    expect(_field(page, "roof_note")).to_be_visible()
    roof_mark = _field(page, "roof_note").locator(".req")
    expect(roof_mark).to_be_hidden()  # one check: roof notes are asked, not required
    checks.get_by_role("checkbox", name="fence").check()
    expect(roof_mark).to_be_visible()
    expect(page.get_by_label("Roof notes")).to_have_attribute("aria-required", "true")

    # A row: its calculation and relevance work per row.
    page.get_by_role("button", name="Add parts row").click()
    _field(page, "parts.0.part").locator("input").fill("bolt")
    page.get_by_label("Amount").fill("150")
    expect(_field(page, "parts.0.why")).to_be_visible()
    page.get_by_label("Amount").fill("2.5")
    expect(_field(page, "parts.0.why")).to_be_hidden()

    # "Mark completed": every missing answer listed, the first one focused.
    page.get_by_role("button", name="Mark completed").click()
    problems = page.locator("#problems")
    expect(problems).to_contain_text("Roof notes is required.")
    expect(problems).to_contain_text("I checked everything is required.")
    expect(page.get_by_label("Roof notes")).to_be_focused()
    crew.screenshot("31-form-logic-problems")
    page.get_by_label("Roof notes").fill("two tiles cracked")
    expect(problems).not_to_contain_text("Roof notes is required.")
    expect(_field(page, "roof_note").locator(".field-error")).to_have_text("")
    page.get_by_label("I checked everything").check()
    expect(problems).to_be_hidden()

    page.get_by_role("button", name="Mark completed").click()
    confirm(page, "Mark completed")
    expect(head_badge(page)).to_contain_text("Completed")
    wait_until(
        lambda: any(
            e["status"] == "completed" for e in envelopes_at_gateway(gw, gw.token(), "logic-1")
        ),
        what="the completed envelope at the gateway",
    )
    body = gw.call("GET", "/api/v1/activities/logic-1", gw.token())["latest_envelope"]
    assert body["status"] == "completed"
    record = body["record"]
    assert record["site_ok"] == "yes" and record["hazard"] is None
    assert record["reading"] == 230.5
    assert record["checks"] == ["fence", "roof"]
    assert record["roof_note"] == "two tiles cracked"
    assert record["done"] is True
    assert record["total"] == "2.5" and record["rows_count"] == "1"
    assert record["summary"] == "parts: 1, total 2.5"
    assert body["tables"]["parts"] == [{"part": "bolt", "amount": 2.5, "line": "1", "why": None}]


@pytest.fixture
def portuguese_phone(chromium_browser: Any) -> Iterator[Crew]:
    c = new_phone(chromium_browser, "pt-BR")
    yield c
    c.context.close()
    assert not c.unexpected_errors(), c.unexpected_errors()


def test_a_portuguese_phone_reads_the_forms_portuguese(
    logic_gateway: GatewayProcess, portuguese_phone: Crew
) -> None:
    gw, crew = logic_gateway, portuguese_phone
    page = crew.page
    page.goto(gw.lan_url + "/")
    page.get_by_label("Nome de usuário").fill("alice")
    page.get_by_label("Senha").fill(PASSWORDS["alice"])
    page.get_by_role("button", name="Entrar").click()
    page.click("[data-activity=logic-2]")
    expect(page.get_by_role("heading", name="O local")).to_be_visible()
    site = page.get_by_role("group", name="O local é seguro?")
    site.get_by_role("radio", name="Não").check()
    expect(page.get_by_label("Descreva o perigo")).to_be_visible()
    expect(_field(page, "hazard").locator(".hint")).to_have_text("Onde fica e quão grave é.")
    expect(page.get_by_label("Descreva o perigo")).to_have_accessible_description(
        "Onde fica e quão grave é."
    )
    page.get_by_role("group", name="Is there power?").get_by_role("radio", name="yes").check()
    page.get_by_label("Leitura do medidor").fill("-3")
    expect(_field(page, "reading").locator(".field-error")).to_have_text(
        "Uma leitura fica entre 0 e 500."
    )
    crew.screenshot("32-form-logic-pt-BR", scroll_to="[data-field=hazard]")


def test_a_default_comes_back_with_its_section_and_a_note_quotes_answers(
    logic_gateway: GatewayProcess, crew: Crew
) -> None:
    gw, page = logic_gateway, crew.page
    crew.sign_in(gw.lan_url)
    page.click("[data-activity=logic-3]")
    expect(page.locator("[data-group=equipment]")).to_be_hidden()
    page.get_by_role("group", name="Has power").get_by_role("radio", name="yes").check()
    expect(page.get_by_label("Meters")).to_have_value("1")
    page.get_by_label("Reading").fill("12.5")
    expect(_field(page, "total_note")).to_have_text("Total: 12.5 kWh")
    page.get_by_label("Meters").fill("2")
    expect(_field(page, "total_note")).to_have_text("Total: 25 kWh")
    page.get_by_role("button", name="Mark completed").click()
    confirm(page, "Mark completed")
    expect(head_badge(page)).to_contain_text("Completed")
    wait_until(
        lambda: gw.call("GET", "/api/v1/activities/logic-3", gw.token())["latest_envelope"],
        what="the envelope at the gateway",
    )
    body = gw.call("GET", "/api/v1/activities/logic-3", gw.token())["latest_envelope"]
    assert body["record"] == {
        "has_power": "yes",
        "meters": 2,
        "kwh": 12.5,
        "total": "25",
        "total_note": None,
    }
