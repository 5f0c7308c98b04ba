"""The web app's form logic (formexpr.js, formlogic.js) in Chromium, against the shared conformance file.

tests/outpost/test_form_logic.py runs the same file through the Python
evaluator the gateway and central use: both must give every expected value.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.web.conftest import Crew, GatewayProcess

pytestmark = pytest.mark.browser

CASES = json.loads(
    (Path(__file__).parents[1] / "data" / "form_logic_conformance.json").read_text("utf-8")
)

RUN_CASES = """
async (cases) => {
  const x = await import("/static/js/formexpr.js");
  const logic = await import("/static/js/formlogic.js");
  const typeOf = (v) => Array.isArray(v) ? "nodeset" : typeof v;
  const exprs = cases.expressions.map((c) => {
    if (c.error) {
      try { x.parse(c.expr); return {expr: c.expr, refused: false}; }
      catch (e) { return {expr: c.expr, refused: e instanceof x.ExpressionError, message: e.message}; }
    }
    const scope = {
      value: (n) => (c.values || {})[n] ?? "",
      current: () => c.current ?? "",
      position: () => c.position ?? 1,
      today: () => c.today ?? "2026-01-01",
    };
    try {
      const v = x.run(c.expr, scope);
      return {expr: c.expr, type: typeOf(v), string: x.toString(v)};
    } catch (e) { return {expr: c.expr, error: String(e)}; }
  });
  const states = cases.states.map((c) => {
    const form = cases.forms[c.form];
    const st = new logic.FormState(form, c.record, c.tables, c.today);
    const hidden = [];
    for (const f of form.fields || []) if (!st.topRelevant[f.name]) hidden.push(f.name);
    for (const t of form.tables || []) {
      st.rowRelevant[t.name].forEach((rel, i) => {
        for (const [n, r] of Object.entries(rel)) if (!r) hidden.push(`${t.name}.${i}.${n}`);
      });
    }
    const values = {};
    for (const key of Object.keys(c.values)) {
      const parts = key.split(".");
      values[key] = parts.length === 3 ? st.rows[parts[0]][Number(parts[1])][parts[2]] : st.top[key];
    }
    const valid = logic.logicProblems(st, form, c.record, c.tables, true).length === 0;
    return {name: c.name, hidden: hidden.sort(), values, valid};
  });
  return {exprs, states};
}
"""


def test_the_web_apps_evaluator_gives_every_expected_value(
    gateway: GatewayProcess, crew: Crew
) -> None:
    crew.page.goto(gateway.lan_url + "/")
    out = crew.page.evaluate(RUN_CASES, CASES)
    wrong: list[str] = []
    for case, got in zip(CASES["expressions"], out["exprs"], strict=True):
        if case.get("error"):
            if not got.get("refused"):
                wrong.append(f"{case['expr']!r} should be refused: {got}")
        elif (got.get("type"), got.get("string")) != (case["type"], case["string"]):
            wrong.append(f"{case['expr']!r}: want {case['type']} {case['string']!r}, got {got}")
    for case, got in zip(CASES["states"], out["states"], strict=True):
        if got["hidden"] != sorted(case["hidden"]):
            wrong.append(f"{case['name']}: hidden {got['hidden']} != {sorted(case['hidden'])}")
        if got["valid"] != case["valid"]:
            wrong.append(f"{case['name']}: valid {got['valid']} != {case['valid']}")
        if got["values"] != case["values"]:
            wrong.append(f"{case['name']}: values {got['values']} != {case['values']}")
    assert not wrong, "\n".join(wrong)
