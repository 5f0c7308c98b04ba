"""The crews' web app speaks the phone's language (English, Portuguese, Spanish).

A phone set to Portuguese (Brazil) gets every screen in Portuguese, dates and
numbers written the Brazilian way, while what it stores and sends stays the
same ISO dates and plain numbers. Anyone can pick another language on the
sign-in screen; the choice stays on the phone, even through the sign-out wipe.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.gateway.conftest import PASSWORDS
from tests.web.conftest import Crew, GatewayProcess, new_phone
from tests.web.steps import confirm, envelopes_at_gateway, wait_until

pytestmark = pytest.mark.browser


@pytest.fixture
def portuguese_phone(chromium_browser: Any) -> Iterator[Crew]:
    c = new_phone(chromium_browser, "pt-BR")
    yield c
    c.context.close()
    assert not c.unexpected_errors(), c.unexpected_errors()


def test_a_portuguese_phone_gets_the_app_in_portuguese(
    gateway: GatewayProcess, portuguese_phone: Crew
) -> None:
    crew = portuguese_phone
    page = crew.page
    page.goto(gateway.lan_url + "/")
    expect(page.locator("html")).to_have_attribute("lang", "pt-BR")
    expect(page.locator("h1")).to_have_text("Entrar")
    expect(page.locator("#reach")).to_have_text("Gateway ao alcance")
    expect(page.locator("#language")).to_have_value("pt-BR")
    expect(page.locator(".skip")).to_have_text("Pular para o conteúdo")

    # The gateway's refusal, in the phone's words.
    page.get_by_label("Nome de usuário").fill("alice")
    page.get_by_label("Senha").fill("not her password")
    page.get_by_role("button", name="Entrar").click()
    expect(page.locator("#signin-error")).to_have_text("O nome de usuário ou a senha está errado.")
    crew.forgive("status of 401 (Unauthorized)")
    crew.screenshot("12-pt-BR-sign-in")

    page.get_by_label("Senha").fill(PASSWORDS["alice"])
    page.get_by_role("button", name="Entrar").click()
    expect(page.locator("h1")).to_have_text("Suas atividades")
    expect(page.locator("[data-activity=act-1] .badge")).to_have_text("○Não iniciada")
    expect(page.locator("#nav")).to_contain_text("Atividades")
    expect(page.locator("#nav")).to_contain_text("Pendentes")
    expect(page.get_by_role("button", name="Sair")).to_be_visible()
    expect(page.get_by_text("Atualizado pelo gateway agora mesmo.")).to_be_visible()

    page.click("[data-activity=act-1]")
    expect(page.get_by_role("button", name="Salvar rascunho")).to_be_visible()
    field = page.locator("[data-field=site_ok]")
    expect(field).to_contain_text("(obrigatório)")
    page.get_by_role("button", name="Marcar como concluída").click()
    expect(page.locator("#problems")).to_contain_text("Antes de concluir, corrija isto:")
    expect(page.locator("#problems")).to_contain_text("Site is safe é obrigatório.")
    field.get_by_text("Sim", exact=True).click()
    page.locator("[data-field=temperature] input").fill("1234.5")
    page.locator("[data-field=visit_date] input").fill("2026-11-23")
    crew.screenshot("13-pt-BR-activity")

    # What is stored is the same as on any phone: plain numbers, ISO dates.
    page.get_by_role("button", name="Salvar rascunho").click()
    expect(page.locator("#toast")).to_contain_text("Rascunho salvo")
    token = gateway.token()
    [draft] = wait_until(lambda: envelopes_at_gateway(gateway, token, "act-1"), what="the draft")
    latest = gateway.call("GET", "/api/v1/activities/act-1", token)["latest_envelope"]
    assert draft["status"] == "draft"
    assert latest["record"]["temperature"] == 1234.5
    assert latest["record"]["visit_date"] == "2026-11-23"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", latest["created_at"])

    # Numbers and dates the Brazilian way (the same functions every screen uses).
    shown = page.evaluate(
        """async () => {
            const i18n = await import("/static/js/i18n.js");
            const ago = new Date(Date.now() - 5 * 60 * 1000).toISOString();
            return {
                number: i18n.formatNumber(1234.5),
                bytes: i18n.formatBytes(4_200_000),
                ago: i18n.relTime(ago),
                date: i18n.formatDateTime("2026-11-23T09:00:00Z"),
                label: i18n.pick({ en: "Site is safe", "pt-BR": "Local seguro", es: "Sitio seguro" }),
                pt: i18n.pick({ en: "Meter", pt: "Medidor" }),
                fallback: i18n.pick({ en: "Meter", es: "Medidor" }),
                plain: i18n.pick("Notes"),
            };
        }"""
    )
    assert shown["number"] == "1.234,5"
    assert shown["bytes"] == "4,2 MB"
    assert shown["ago"] == "há 5 minutos"
    assert "2026" in shown["date"] and "nov" in shown["date"]
    assert shown["label"] == "Local seguro"
    assert shown["pt"] == "Medidor"
    assert shown["fallback"] == "Meter"
    assert shown["plain"] == "Notes"

    page.click("#nav >> text=Pendentes")
    expect(page.locator("h1")).to_have_text("Pendentes")
    expect(page.locator("#counts [data-state=stored] dt")).to_have_text("Rascunhos guardados")
    expect(page.locator("#backhaul")).to_have_text(
        "A conexão com a central caiu: o trabalho concluído espera no gateway, "
        "guardado com segurança."
    )
    crew.screenshot("14-pt-BR-pending")

    page.get_by_role("button", name="Sair").click()
    confirm(page, "Sair")
    expect(page.locator("h1")).to_have_text("Entrar")


def test_the_language_switch_on_the_sign_in_screen_is_kept_on_the_phone(
    gateway: GatewayProcess, crew: Crew
) -> None:
    page = crew.page
    page.goto(gateway.lan_url + "/")
    expect(page.locator("h1")).to_have_text("Sign in")  # an en-GB phone
    page.get_by_label("User name").fill("alice")
    page.locator("#language").select_option("es")
    expect(page.locator("h1")).to_have_text("Iniciar sesión")
    expect(page.locator("html")).to_have_attribute("lang", "es")
    expect(page.get_by_label("Nombre de usuario")).to_have_value("alice")  # nothing retyped
    expect(page.locator("#reach")).to_have_text("Gateway al alcance")

    page.reload()
    expect(page.locator("h1")).to_have_text("Iniciar sesión")
    page.get_by_label("Nombre de usuario").fill("alice")
    page.get_by_label("Contraseña").fill(PASSWORDS["alice"])
    page.get_by_role("button", name="Iniciar sesión").click()
    expect(page.locator("h1")).to_have_text("Tus actividades")

    # Signing out wipes the crew member's data, not the phone's language.
    page.get_by_role("button", name="Cerrar sesión").click()
    confirm(page, "Cerrar sesión")
    expect(page.locator("h1")).to_have_text("Iniciar sesión")
    page.reload()
    expect(page.locator("h1")).to_have_text("Iniciar sesión")
    page.locator("#language").select_option("en")
    expect(page.locator("h1")).to_have_text("Sign in")


def test_every_language_has_every_sentence_in_the_same_shape(
    gateway: GatewayProcess, crew: Crew
) -> None:
    page = crew.page
    page.goto(gateway.lan_url + "/")
    found = page.evaluate(
        """async () => {
            const { LOCALES } = await import("/static/js/i18n.js");
            const names = (text) => text.match(/\\{\\w+\\}/g) || [];
            const shape = (v) => typeof v === "string"
                ? { plural: false, forms: [], names: names(v) }
                : { plural: true, forms: Object.keys(v), names: Object.values(v).flatMap(names) };
            return Object.fromEntries(LOCALES.map((l) => [l.tag, Object.fromEntries(
                Object.entries(l.words).map(([k, v]) => [k, shape(v)]))]));
        }"""
    )
    english = found.pop("en")
    assert set(found) == {"pt-BR", "es"}
    assert len(english) > 150
    for tag, words in found.items():
        assert words.keys() == english.keys(), (tag, words.keys() ^ english.keys())
        for key, en in english.items():
            there = words[key]
            assert there["plural"] == en["plural"], (tag, key)
            if not en["plural"]:
                assert sorted(there["names"]) == sorted(en["names"]), (tag, key)
                continue
            assert "other" in there["forms"], (tag, key)
            # Plural forms may spell the number out ("once"), never add a name.
            assert set(there["names"]) <= set(en["names"]), (tag, key)
            assert set(en["names"]) - {"{n}"} <= set(there["names"]), (tag, key)
