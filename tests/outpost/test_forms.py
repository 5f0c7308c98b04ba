import pytest
from pydantic import ValidationError

from outpost.forms import FormDefinition, validate_submission

FORM = FormDefinition.model_validate(
    {
        "fields": [
            {"name": "site_ok", "type": "boolean", "required": True},
            {"name": "notes", "type": "text"},
            {"name": "visits", "type": "integer"},
            {"name": "when", "type": "date"},
            {"name": "at", "type": "datetime"},
            {"name": "risk", "type": "choice", "options": ["low", "high"]},
            {"name": "photo", "type": "attachment"},
            {"name": "sig", "type": "signature"},
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
)
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def test_a_valid_submission_has_no_problems() -> None:
    record = {
        "site_ok": True,
        "notes": "fence cut",
        "visits": 2,
        "when": "2026-11-23",
        "at": "2026-11-23T09:00:00Z",
        "risk": "low",
        "photo": SHA,
    }
    tables = {"readings": [{"meter": "A1", "value": 14.2}, {"meter": "A2"}]}
    assert validate_submission(FORM, record, tables, [SHA]) == []


@pytest.mark.parametrize(
    ("record", "tables", "problem"),
    [
        ({}, {}, "field 'site_ok' is required"),
        ({"site_ok": "yes"}, {}, "field 'site_ok' must be true or false"),
        ({"site_ok": True, "visits": 1.5}, {}, "must be a whole number"),
        ({"site_ok": True, "visits": True}, {}, "must be a whole number"),
        ({"site_ok": True, "when": "23/11/2026"}, {}, "must be a date"),
        ({"site_ok": True, "risk": "medium"}, {}, "must be one of 'low', 'high'"),
        ({"site_ok": True, "colour": "red"}, {}, "'colour' is not a field of this form"),
        ({"site_ok": True, "photo": "abc"}, {}, "SHA-256"),
        (
            {"site_ok": True},
            {"readings": [{"value": 1}]},
            "readings row 1 field 'meter' is required",
        ),
        ({"site_ok": True}, {"readings": [{"meter": "A", "value": "x"}]}, "must be a number"),
        ({"site_ok": True}, {"other": []}, "table 'other' is not part of this form"),
        ({"site_ok": True, "photo": SHA}, {}, "not listed in attachments"),
    ],
)
def test_each_kind_of_problem_is_named(record: dict, tables: dict, problem: str) -> None:
    problems = validate_submission(FORM, record, tables, [])
    assert any(problem in p for p in problems), problems


def test_form_definition_refuses_choice_without_options() -> None:
    with pytest.raises(ValidationError, match="needs a non-empty 'options'"):
        FormDefinition.model_validate({"fields": [{"name": "x", "type": "choice"}]})


def test_form_definition_refuses_duplicate_fields() -> None:
    with pytest.raises(ValidationError, match="duplicate field name"):
        FormDefinition.model_validate(
            {"fields": [{"name": "x", "type": "text"}, {"name": "x", "type": "text"}]}
        )


def test_a_draft_may_leave_required_answers_out_but_not_give_wrong_ones() -> None:
    draft = {"notes": "half done"}
    rows = {"readings": [{"value": 1.5}]}  # the meter not read yet
    assert validate_submission(FORM, draft, rows, [], complete=False) == []
    assert validate_submission(FORM, {"site_ok": True, "notes": ""}, {}, [], complete=False) == []
    wrong = validate_submission(FORM, {"site_ok": "yes"}, {}, [], complete=False)
    assert wrong == ["field 'site_ok' must be true or false"]
    # the completed envelope must have them all
    done = validate_submission(FORM, draft, rows, [])
    assert "field 'site_ok' is required" in done
    assert "readings row 1 field 'meter' is required" in done
