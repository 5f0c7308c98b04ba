"""The Activity types page's preview: a definition as the crew will see it."""

from __future__ import annotations

from cloud_bridge.form_preview import preview


def test_widgets_follow_the_crews_app() -> None:
    p = preview(
        {
            "fields": [
                {"name": "site_ok", "type": "boolean", "required": True},
                {"name": "weather", "type": "choice", "options": ["dry", "wet"]},
                {"name": "crew", "type": "choice", "options": list("abcdefg")},
                {"name": "photo", "type": "attachment", "label": "Photo of the gate"},
                {"name": "sig", "type": "signature"},
            ],
            "tables": [{"name": "meter_readings", "fields": [{"name": "value", "type": "number"}]}],
        }
    )
    (section,) = p.sections
    kinds = {w.name: w.kind for w in section.widgets}
    assert kinds == {
        "site_ok": "yesno",
        "weather": "buttons",
        "crew": "select",
        "photo": "photo",
        "sig": "signature",
    }
    assert section.widgets[0].label == "Site ok" and section.widgets[0].required
    assert section.widgets[3].label == "Photo of the gate"
    assert p.tables[0].label == "Meter readings" and p.tables[0].widgets[0].kind == "number"


def test_languages_sections_and_logic_are_shown() -> None:
    p = preview(
        {
            "sections": [{"name": "safety", "label": {"en": "Safety", "pt-BR": "Segurança"}}],
            "fields": [
                {
                    "name": "safe",
                    "type": "boolean",
                    "section": "safety",
                    "label": {"en": "Is the site safe?", "pt-BR": "O local é seguro?"},
                    "hint": {"en": "Look at the fence"},
                },
                {
                    "name": "hazard",
                    "type": "text",
                    "section": "safety",
                    "relevant": "${safe} = false()",
                    "required": "${safe} = false()",
                },
                {
                    "name": "reading",
                    "type": "integer",
                    "constraint": ". >= 0 and . <= 500",
                    "constraint_message": "Between 0 and 500",
                },
                {"name": "kind", "type": "choice", "options": [{"value": "a", "label": "Alpha"}]},
            ],
        },
        language="pt-BR",
    )
    assert p.languages == ["en", "pt-BR"]
    safety, rest = p.sections
    assert safety.label == "Segurança" and safety.widgets[0].label == "O local é seguro?"
    assert safety.widgets[0].hint == "Look at the fence"  # no pt-BR hint: the English one
    assert safety.widgets[1].logic == [
        "Shown only when ${safe} = false()",
        "Required when ${safe} = false()",
    ]
    assert rest.name is None and 'else: "Between 0 and 500"' in rest.widgets[0].logic[0]
    assert rest.widgets[1].options == ["Alpha"]


def test_an_empty_or_odd_definition_does_not_break_it() -> None:
    assert preview({}).empty
    p = preview({"fields": [{"name": "x", "type": "geotrace"}, "junk"], "tables": [{}]})
    assert p.sections[0].widgets[0].kind == "text" and p.tables[0].name == "?"


def test_an_imported_xlsform_previews_with_its_groups_and_option_labels() -> None:
    from cloud_bridge.xlsform import read_xlsform
    from tests.cloud_bridge.xlsform_books import INSPECTION

    form = read_xlsform(INSPECTION.read_bytes()).form
    pt = preview(form, "pt")
    assert pt.languages == ["en", "pt"]
    assert [s.label for s in pt.sections] == ["Local", "Equipamento", "Encerramento"]
    safe = next(w for w in pt.sections[0].widgets if w.name == "site_safe")
    assert safe.options == ["Sim", "Não"] and safe.kind == "buttons"
    ppe = next(w for w in pt.sections[0].widgets if w.name == "ppe")
    assert "Several options may be picked" in ppe.logic
    assert preview(form, "en").sections[0].label == "Site"
    assert pt.sections[1].relevant == "${site_safe} = 'yes'" and pt.sections[0].relevant is None
