"""Real forms through the import: the inspection in tests/data and pyxform's own examples."""

from __future__ import annotations

from typing import Any

import pytest

from cloud_bridge.xlsform import XlsformError, read_xlsform
from outpost.forms import FormDefinition
from tests.cloud_bridge.xlsform_books import INSPECTION, PYXFORM, from_csv, from_markdown


def _field(form: dict[str, Any], name: str) -> dict[str, Any]:
    for f in [*form["fields"], *(f for t in form["tables"] for f in t["fields"])]:
        if f["name"] == name:
            return dict(f)
    raise AssertionError(f"no field {name}")


def test_the_inspection_form() -> None:
    got = read_xlsform(INSPECTION.read_bytes())
    assert (got.form_id, got.title, got.version) == (
        "site_inspection",
        "Site inspection",
        "2026120201",
    )
    form = got.form
    assert form["title"] == "Site inspection"
    assert form["languages"] == ["en", "pt"] and form["default_language"] == "en"
    assert [g["name"] for g in form["groups"]] == ["site", "equipment", "sign_off"]
    assert form["groups"][1]["relevant"] == "${site_safe} = 'yes'"
    assert form["groups"][1]["label"] == {"en": "Equipment", "pt": "Equipamento"}
    assert [f["name"] for f in form["fields"]] == [
        "site_name",
        "inspection_date",
        "arrival_time",
        "site_safe",
        "hazard",
        "ppe",
        "meters_expected",
        "total_reading",
        "total_note",
        "site_photo",
        "notes",
        "confirm",
        "signature",
    ]
    (table,) = form["tables"]
    assert table["name"] == "readings" and table["group"] == "equipment"
    assert [f["name"] for f in table["fields"]] == ["meter", "reading", "condition", "fault"]
    hazard = _field(form, "hazard")
    expected = {
        "type": "text",
        "label": {"en": "Describe the hazard", "pt": "Descreva o perigo"},
        "required": True,
        "required_message": {
            "en": "Say what makes the site unsafe",
            "pt": "Diga o que torna o local inseguro",
        },
        "relevant": "${site_safe} = 'no'",
        "group": "site",
    }
    assert {k: hazard.get(k) for k in expected} == expected
    reading = _field(form, "reading")
    assert reading["type"] == "number"
    assert reading["constraint"] == ". >= 0 and . <= 500"
    assert reading["constraint_message"]["pt"] == "Uma leitura fica entre 0 e 500 kWh"
    assert _field(form, "total_reading")["calculation"] == "sum(${reading})"
    assert _field(form, "total_reading")["type"] == "calculate"
    assert _field(form, "meters_expected")["default"] == 1
    assert _field(form, "site_safe")["options"] == ["yes", "no"]
    assert _field(form, "site_safe")["option_labels"]["no"] == {"en": "No", "pt": "Não"}
    assert _field(form, "ppe")["type"] == "multichoice"
    assert _field(form, "site_photo")["type"] == "attachment"
    assert _field(form, "signature")["type"] == "signature"
    assert _field(form, "confirm")["type"] == "acknowledge"
    assert _field(form, "total_note")["type"] == "note"
    assert _field(form, "arrival_time")["type"] == "time"
    assert _field(form, "fault")["relevant"] == "${condition} = 'fault'"
    # What was read is a valid definition as it stands (the one central stores).
    FormDefinition.model_validate(form)


def test_the_inspection_workbook_is_what_its_script_writes() -> None:
    """tests/data/inspection.xlsx is committed; it must say what make_inspection_xlsform says."""
    from openpyxl import load_workbook

    from tests.data.make_inspection_xlsform import build

    committed = load_workbook(INSPECTION)
    fresh = build()
    for title in ("survey", "choices", "settings"):
        a = [list(r) for r in committed[title].iter_rows(values_only=True)]
        b = [list(r) for r in fresh[title].iter_rows(values_only=True)]
        assert a == b, f"rerun tests/data/make_inspection_xlsform.py ({title} differs)"


def test_pyxform_text_and_integer() -> None:
    form = read_xlsform(from_markdown(PYXFORM / "text_and_integer.md")).form
    assert [{k: f.get(k) for k in ("name", "type", "label")} for f in form["fields"]] == [
        {"name": "your_name", "type": "text", "label": "What is your name?"},
        {"name": "your_age", "type": "integer", "label": "How many years old are you?"},
    ]


def test_pyxform_yes_or_no_question() -> None:
    form = read_xlsform(from_markdown(PYXFORM / "yes_or_no_question.md")).form
    (field,) = form["fields"]
    assert field["name"] == "good_day" and field["type"] == "choice"
    assert field["label"] == "have you had a good day today?"
    assert field["options"] == ["yes", "no"]
    assert field["option_labels"] == {"yes": "yes", "no": "no"}


def problems_of(data: bytes) -> list[str]:
    with pytest.raises(XlsformError) as caught:
        read_xlsform(data)
    return [str(p) for p in caught.value.problems]


def test_pyxform_group_with_a_phone_number() -> None:
    assert problems_of(from_markdown(PYXFORM / "group.md")) == [
        "survey row 4, column type: 'phone number' is not supported"
    ]


def test_pyxform_specify_other() -> None:
    assert problems_of(from_markdown(PYXFORM / "specify_other.md")) == [
        "survey row 2, column type: 'select one from sexes or specify other' is not supported "
        "('or specify other' after the list name)"
    ]


def test_pyxform_loop() -> None:
    got = problems_of(from_markdown(PYXFORM / "loop.md"))
    assert got[:3] == [
        "survey row 2, column type: 'select all that apply from toilet_type or specify other' "
        "is not supported ('or specify other' after the list name)",
        "survey row 3, column type: 'begin loop over toilet_type' is not supported",
        "survey row 5, column type: 'end loop' is not supported",
    ]


def test_pyxform_case_insensitivity() -> None:
    got = problems_of(from_markdown(PYXFORM / "case_insensitivity.md"))
    for expected in (
        "external_choices sheet: the external_choices sheet is not supported",
        "entities sheet: the entities sheet is not supported",
        "osm sheet: the osm sheet is not supported",
    ):
        assert expected in got, got


def test_pyxform_widgets() -> None:
    got = problems_of(from_csv(PYXFORM / "widgets.csv"))
    for expected in (
        "survey row 3, column bind:constraint: the column 'bind:constraint' is not supported",
        "survey row 11, column type: 'geopoint' is not supported",
        "survey row 12, column type: 'barcode' is not supported",
        "survey row 14, column type: 'audio' is not supported",
        "survey row 15, column type: 'video' is not supported",
        "settings row 2, column add_none_option: the column 'add_none_option' is not supported",
    ):
        assert expected in got, got


def test_nested_groups_are_flattened_with_both_relevances() -> None:
    from tests.cloud_bridge.xlsform_books import simple

    form = read_xlsform(
        simple(
            ("select_one yn", "power", "Power?", ""),
            ("begin group", "outer", "Outer", "${power} = 'yes'"),
            ("integer", "volts", "Volts", ""),
            ("begin group", "inner", "Inner", "${volts} > 200"),
            ("text", "breaker", "Breaker", ""),
            ("end group", "", "", ""),
            ("text", "after", "After", ""),
            ("end group", "", "", ""),
            header=("type", "name", "label", "relevant"),
        )
    ).form
    assert form["groups"] == [
        {"name": "outer", "label": "Outer", "relevant": "${power} = 'yes'"},
        {"name": "inner", "label": "Inner", "relevant": "(${power} = 'yes') and (${volts} > 200)"},
    ]
    assert [(f["name"], f.get("group")) for f in form["fields"]] == [
        ("power", None),
        ("volts", "outer"),
        ("breaker", "inner"),
        ("after", "outer"),
    ]


def test_required_if_read_only_defaults_and_a_group_in_a_repeat() -> None:
    from tests.cloud_bridge.xlsform_books import workbook

    form = read_xlsform(
        workbook(
            [
                ("type", "name", "label", "required", "read_only", "default", "calculation"),
                ("select_multiple yn", "checks", "Checks", "", "", "yes no", ""),
                ("text", "why", "Why?", "selected(${checks}, 'no')", "", "", ""),
                ("decimal", "rate", "Rate", "", "yes", "2.5", ""),
                ("begin repeat", "parts", "Parts", "", "", "", ""),
                ("begin group", "part_detail", "Detail", "", "", "", ""),
                ("text", "part", "Part", "yes", "", "", ""),
                ("integer", "line", "Line", "", "yes", "", "position(..)"),
                ("end group", "", "", "", "", "", ""),
                ("end repeat", "", "", "", "", "", ""),
            ],
            choices=[("list_name", "name", "label"), ("yn", "yes", "Yes"), ("yn", "no", "No")],
            settings=[("form_id",), ("edge",)],
        )
    ).form
    checks, why, rate = form["fields"]
    assert checks["type"] == "multichoice" and checks["default"] == ["yes", "no"]
    assert why["required"] == "selected(${checks}, 'no')"
    assert rate["read_only"] is True and rate["default"] == 2.5
    (parts,) = form["tables"]
    assert [(f["name"], f.get("group")) for f in parts["fields"]] == [
        ("part", "part_detail"),
        ("line", "part_detail"),
    ]
    assert parts["fields"][1]["calculation"] == "position(..)"
    assert {"name": "part_detail", "label": "Detail"} in form["groups"]


def test_a_plain_column_is_the_default_language() -> None:
    from tests.cloud_bridge.xlsform_books import workbook

    form = read_xlsform(
        workbook(
            [
                ("type", "name", "label::English (en)", "label::Français (fr)", "hint"),
                ("text", "a", "Name", "Nom", "As written"),
            ],
            settings=[("form_id", "default_language"), ("lang", "Français (fr)")],
        )
    ).form
    assert form["languages"] == ["en", "fr"] and form["default_language"] == "fr"
    (field,) = form["fields"]
    assert field["label"] == {"en": "Name", "fr": "Nom"}
    assert field["hint"] in ("As written", {"fr": "As written"})
