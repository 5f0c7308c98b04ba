"""Whatever an expression or a submission holds, the form logic answers with a reason, never a crash.

A definition's expressions come from an admin (or a spreadsheet), a
submission's values from any device: neither may make the gateway or central
raise (a 5xx, a replay that stops).
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from outpost import formexpr
from outpost.forms import FormDefinition, validate_submission

CASES = json.loads(
    (Path(__file__).parents[1] / "data" / "form_logic_conformance.json").read_text("utf-8")
)
FORM = FormDefinition.model_validate(CASES["forms"]["inspection"])

PIECES = [
    "${a}",
    "${b}",
    "${r}",
    ".",
    "..",
    "(",
    ")",
    ",",
    " ",
    "1",
    "0",
    "-",
    "2.5",
    ".5",
    "'x'",
    '"y"',
    "=",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "*",
    " div ",
    " mod ",
    " and ",
    " or ",
    *(f"{name}(" for name in formexpr.FUNCTIONS),
    "1 div 0",
    "400",
    "1e300",
    "'2026-12-02'",
    "'[a-z'",
    "'(a+)+$'",
    "today()",
]


class _Scope:
    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def value(self, name: str) -> str | list[str]:
        return self.values.get(name, "")  # type: ignore[no-any-return]

    def current(self) -> str:
        return str(self.values.get("a", ""))

    def position(self) -> int:
        return 2

    def today(self) -> str:
        return "2026-12-02"


VALUES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "0", "-1", "1e309", "2026-02-30", "2026-12-02T10:00:00+14:00", "NaN"]),
)


@settings(max_examples=600, deadline=None)
@given(
    st.lists(st.sampled_from(PIECES), max_size=14).map("".join),
    VALUES,
    VALUES,
    st.lists(VALUES, max_size=3),
)
def test_any_expression_parses_or_is_refused_and_evaluates_without_raising(
    text: str, a: str, b: str, r: list[str]
) -> None:
    try:
        parsed = formexpr.parse(text)
    except formexpr.ExpressionError:
        return
    result = formexpr.evaluate(parsed.tree, _Scope({"a": a, "b": b, "r": r}))
    assert isinstance(formexpr.to_string(result), str)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
NAMES = st.sampled_from([f.name for f in FORM.fields] + ["bogus"])


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(NAMES, JSON, max_size=8),
    st.one_of(
        JSON,
        st.fixed_dictionaries(
            {
                "parts": st.lists(
                    st.dictionaries(
                        st.sampled_from(["part", "amount", "line", "why", "x"]), JSON, max_size=4
                    ),
                    max_size=3,
                )
            }
        ),
    ),
    st.booleans(),
)
def test_any_submission_gets_a_list_of_reasons(
    record: dict[str, Any], tables: Any, complete: bool
) -> None:
    problems = validate_submission(
        FORM, record, tables, [], complete=complete, today=date(2026, 12, 2)
    )
    assert all(isinstance(p, str) and p for p in problems)
