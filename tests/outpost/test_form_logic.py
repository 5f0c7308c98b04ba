"""Form logic on the Python side: the shared conformance file, definition-time refusals, bounds.

The same file is read by tests/web/test_form_logic_js.py in Chromium, so the
web app's evaluator and this one cannot drift apart unseen.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from outpost import formexpr
from outpost.forms import FormDefinition, FormState, validate_submission

CASES = json.loads(
    (Path(__file__).parents[1] / "data" / "form_logic_conformance.json").read_text("utf-8")
)


class _Scope:
    def __init__(self, case: dict[str, Any]) -> None:
        self.case = case

    def value(self, name: str) -> str | list[str]:
        return self.case.get("values", {}).get(name, "")  # type: ignore[no-any-return]

    def current(self) -> str:
        return str(self.case.get("current", ""))

    def position(self) -> int:
        return int(self.case.get("position", 1))

    def today(self) -> str:
        return str(self.case.get("today", "2026-01-01"))


def _type(v: formexpr.Value) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, float):
        return "number"
    if isinstance(v, list):
        return "nodeset"
    return "string"


@pytest.mark.parametrize("case", CASES["expressions"], ids=lambda c: c["expr"] or "(empty)")
def test_expression(case: dict[str, Any]) -> None:
    if case.get("error"):
        with pytest.raises(formexpr.ExpressionError):
            formexpr.parse(case["expr"])
        return
    result = formexpr.evaluate(formexpr.parse(case["expr"]).tree, _Scope(case))
    assert (_type(result), formexpr.to_string(result)) == (case["type"], case["string"])


def _form(name: str) -> FormDefinition:
    return FormDefinition.model_validate(CASES["forms"][name])


@pytest.mark.parametrize("case", CASES["states"], ids=lambda c: c["name"])
def test_form_state(case: dict[str, Any]) -> None:
    form = _form(case["form"])
    state = FormState(form, case["record"], case["tables"], case["today"])
    hidden = [f.name for f in form.fields if not state.top_relevant[f.name]]
    for t in form.tables:
        for i, rel in enumerate(state.row_relevant[t.name]):
            hidden += [f"{t.name}.{i}.{n}" for n, r in rel.items() if not r]
    assert sorted(hidden) == sorted(case["hidden"])
    for key, want in case["values"].items():
        if "." in key:
            table, row, name = key.split(".")
            assert state.rows[table][int(row)][name] == want, key
        else:
            assert state.top[key] == want, key
    problems = validate_submission(
        form, case["record"], case["tables"], today=date.fromisoformat(case["today"])
    )
    if case["valid"]:
        assert problems == []
    else:
        assert problems, "expected a problem"
        assert any(case["problem"] in p for p in problems), problems


def test_old_definitions_stay_valid() -> None:
    old = {
        "fields": [
            {"name": "site_ok", "type": "boolean", "required": True},
            {"name": "kind", "type": "choice", "options": ["a", "b"], "label": "Kind"},
        ],
        "tables": [{"name": "readings", "fields": [{"name": "value", "type": "number"}]}],
    }
    form = FormDefinition.model_validate(old)
    assert validate_submission(form, {"site_ok": True, "kind": "a"}, {}) == []
    assert validate_submission(form, {}, {}) == ["field 'site_ok' is required"]
    assert validate_submission(form, {}, {}, complete=False) == []


@pytest.mark.parametrize(
    ("field", "says"),
    [
        ({"name": "a", "type": "text", "relevant": "${nope} = 1"}, "${nope} is not a field"),
        ({"name": "a", "type": "text", "constraint": "foo(.)"}, "foo() is not a supported"),
        ({"name": "a", "type": "text", "relevant": "${a} ="}, "ends where a value"),
        (
            {"name": "a", "type": "text", "relevant": "position(..) = 1"},
            "only works inside a table",
        ),
        ({"name": "a", "type": "text", "required": "if(1, 2)"}, "takes 3 arguments"),
        ({"name": "a", "type": "text", "calculation": "x" * 2001}, "at most 2000"),
        ({"name": "a", "type": "calculate"}, "needs a 'calculation'"),
        ({"name": "a", "type": "note", "required": True}, "shows text only"),
        ({"name": "a", "type": "boolean", "calculation": "1"}, "cannot have a calculation"),
        ({"name": "a", "type": "multichoice", "options": ["a b"]}, "may not contain spaces"),
        ({"name": "a", "type": "choice", "options": ["x"], "option_labels": {"y": "Y"}}, "unknown"),
        ({"name": "a", "type": "integer", "default": "x"}, "must be a whole number"),
        ({"name": "a", "type": "text", "group": "nowhere"}, "not defined"),
        ({"name": "a", "type": "text", "label": "x" * 1001}, "at most 1000"),
        ({"name": "a", "type": "text", "label": {"english!": "x"}}, "pattern"),
        ({"name": "a", "type": "text", "constraint_message": "m"}, "no constraint"),
        ({"name": "a", "type": "text", "relevant": "1" + " + 1" * 300}, "too long"),
        ({"name": "a", "type": "text", "relevant": "(" * 60 + "1" + ")" * 60}, "nests deeper"),
        ({"name": "a", "type": "text", "constraint": "regex(., '[a-z')"}, "does not compile"),
        ({"name": "a", "type": "text", "constraint": "regex(., '(?i)ab')"}, "as JavaScript reads"),
        ({"name": "a", "type": "text", "constraint": "regex(., '[0-9]++')"}, "as JavaScript reads"),
        ({"name": "a", "type": "text", "constraint": "regex(., '^(a+)+$')"}, "exponential time"),
    ],
)
def test_a_bad_definition_is_refused_with_a_clear_message(field: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError) as err:
        FormDefinition.model_validate({"fields": [field]})
    assert says in str(err.value)


def test_an_ambiguous_repeat_reference_is_refused() -> None:
    with pytest.raises(ValidationError, match="ambiguous"):
        FormDefinition.model_validate(
            {
                "fields": [{"name": "t", "type": "calculate", "calculation": "sum(${n})"}],
                "tables": [
                    {"name": "a", "fields": [{"name": "n", "type": "number"}]},
                    {"name": "b", "fields": [{"name": "n", "type": "number"}]},
                ],
            }
        )


def test_new_types_check_their_values() -> None:
    form = FormDefinition.model_validate(
        {
            "fields": [
                {"name": "at", "type": "time"},
                {"name": "m", "type": "multichoice", "options": ["a", "b"]},
                {"name": "n", "type": "note", "label": "Read this"},
                {"name": "ok", "type": "acknowledge"},
            ]
        }
    )
    assert validate_submission(form, {"at": "09:30", "m": ["a", "b"], "ok": True}, {}) == []
    problems = validate_submission(
        form, {"at": "25:00", "m": ["a", "a"], "n": "x", "ok": False}, {}
    )
    assert len(problems) == 4, problems


def test_today_is_the_envelopes_day_within_a_day_of_utc() -> None:
    form = FormDefinition.model_validate(
        {"fields": [{"name": "d", "type": "date", "constraint": ". >= today()"}]}
    )
    day = date(2026, 12, 2)
    # A phone ahead of UTC already lives on the 3rd.
    assert validate_submission(form, {"d": "2026-12-03"}, {}, today=day) == []
    assert validate_submission(form, {"d": "2026-12-01"}, {}, today=day) == []
    assert validate_submission(form, {"d": "2026-11-30"}, {}, today=day) != []


def test_a_draft_is_not_required_to_be_whole_but_its_answers_must_fit() -> None:
    form = _form("inspection")
    assert validate_submission(form, {"site_ok": "no"}, {}, complete=False) == []
    problems = validate_submission(form, {"has_power": "yes", "reading": -1}, {}, complete=False)
    assert problems == ["field 'reading': A reading is between 0 and 500."]
