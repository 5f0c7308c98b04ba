// A form's logic on the phone: relevance, calculations, required-if and
// constraints, the same passes as outpost/forms.py FormState and
// validate_submission (checked against tests/data/form_logic_conformance.json).

import { run, toBool, toNumber, toString, numberString } from "./formexpr.js";

export const MAX_PASSES = 10;

/** An answer as expressions read it (ODK's instance text). */
export function instanceValue(field, value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "boolean") {
    if (field.type === "acknowledge") return value ? "OK" : "";
    return value ? "true" : "false";
  }
  if (typeof value === "number") return numberString(value);
  if (Array.isArray(value)) return value.map(String).join(" ");
  return String(value);
}

/** A calculation's result as the field's value reads ('' for NaN). */
export function calculated(field, result) {
  if (field.type === "number" || field.type === "integer") {
    let n = toNumber(result);
    if (!Number.isFinite(n)) return "";
    if (field.type === "integer") n = Math.trunc(n);
    return numberString(n);
  }
  if (typeof result === "number" && !Number.isFinite(result)) return "";
  return toString(result);
}

/** The value to store for a computed field (what the gateway expects). */
export function storedCalculation(field, text) {
  if (text === "") return null;
  if (field.type === "number" || field.type === "integer") return Number(text);
  return text;
}

// Python's str.strip() whitespace (the gateway's test of a blank answer), not JavaScript's trim().
const BLANK = /^[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$/;

export function isMissing(value) {
  if (value === null || value === undefined) return true;
  if (typeof value === "string") return BLANK.test(value);
  if (Array.isArray(value)) return value.length === 0;
  return false;
}

export class FormState {
  constructor(form, record, tables, today) {
    this.form = form;
    this.today = today;
    const fields = form.fields || [];
    this.tables = form.tables || [];
    this.rawTop = {};
    for (const f of fields) this.rawTop[f.name] = instanceValue(f, record[f.name]);
    this.rawRows = {};
    for (const t of this.tables) {
      this.rawRows[t.name] = (tables[t.name] || []).map((row) => {
        const r = {};
        for (const f of t.fields) r[f.name] = instanceValue(f, row[f.name]);
        return r;
      });
    }
    this.top = { ...this.rawTop };
    this.rows = {};
    for (const [name, rows] of Object.entries(this.rawRows)) this.rows[name] = rows.map((r) => ({ ...r }));
    this.groupRelevant = {};
    this.topRelevant = {};
    this.tableRelevant = {};
    this.rowRelevant = {};
    for (const t of this.tables) this.rowRelevant[t.name] = this.rawRows[t.name].map(() => ({}));
    this.owner = {};
    for (const t of this.tables) for (const f of t.fields) this.owner[f.name] = t.name;
    for (let i = 0; i < MAX_PASSES; i++) if (!this.pass()) break;
  }

  scope(table = null, row = 0, current = "") {
    const st = this;
    return {
      value(name) {
        if (table !== null) {
          const r = st.rows[table][row];
          if (Object.hasOwn(r, name)) return r[name];
        }
        if (Object.hasOwn(st.top, name)) return st.top[name];
        if (Object.hasOwn(st.rows, name)) {
          return st.tableRelevant[name] ?? true ? st.rows[name].map(() => "") : [];
        }
        const owner = st.owner[name];
        if (owner === undefined) return "";
        return st.tableRelevant[owner] ?? true ? st.rows[owner].map((r) => r[name]) : [];
      },
      current: () => current,
      position: () => row + 1,
      today: () => st.today,
    };
  }

  eval(text, table = null, row = 0, current = "") {
    return run(text, this.scope(table, row, current));
  }

  field(f, values, raw, relevant, rel, table, row) {
    if (rel && f.relevant) rel = toBool(this.eval(f.relevant, table, row, raw[f.name]));
    let value = rel ? raw[f.name] : "";
    if (rel && f.calculation) value = calculated(f, this.eval(f.calculation, table, row, raw[f.name]));
    const changed = relevant[f.name] !== rel || values[f.name] !== value;
    relevant[f.name] = rel;
    values[f.name] = value;
    return changed;
  }

  pass() {
    let changed = false;
    for (const g of this.form.groups || []) {
      const rel = !g.relevant || toBool(this.eval(g.relevant));
      changed ||= this.groupRelevant[g.name] !== rel;
      this.groupRelevant[g.name] = rel;
    }
    const groupOk = (name) => (name ? this.groupRelevant[name] ?? true : true);
    for (const f of this.form.fields || []) {
      changed = this.field(f, this.top, this.rawTop, this.topRelevant, groupOk(f.group), null, 0) || changed;
    }
    for (const t of this.tables) {
      const trel = groupOk(t.group) && (!t.relevant || toBool(this.eval(t.relevant)));
      changed ||= this.tableRelevant[t.name] !== trel;
      this.tableRelevant[t.name] = trel;
      this.rawRows[t.name].forEach((raw, i) => {
        const values = this.rows[t.name][i];
        const relevant = this.rowRelevant[t.name][i];
        for (const f of t.fields) {
          changed = this.field(f, values, raw, relevant, trel && groupOk(f.group), t.name, i) || changed;
        }
      });
    }
    return changed;
  }

  /** Is this field asked? table/row for a table's field. */
  relevant(name, table = null, row = 0) {
    if (table === null) return this.topRelevant[name] ?? true;
    return this.rowRelevant[table]?.[row]?.[name] ?? true;
  }

  value(name, table = null, row = 0) {
    return table === null ? this.top[name] : this.rows[table][row][name];
  }

  /** Is a relevant field required now (bool or required-if)? */
  required(f, table = null, row = 0) {
    if (f.required === true) return true;
    if (!f.required) return false;
    return toBool(this.eval(f.required, table, row, this.value(f.name, table, row)));
  }

  /** Does a relevant, answered field meet its constraint? */
  allowed(f, table = null, row = 0) {
    if (!f.constraint) return true;
    return toBool(this.eval(f.constraint, table, row, this.value(f.name, table, row)));
  }
}

/** Which of the form's groups, fields and tables use any logic (to skip work on plain forms). */
export function usesLogic(form) {
  const all = [...(form.fields || []), ...(form.tables || []).flatMap((t) => t.fields)];
  return (
    (form.groups || []).some((g) => g.relevant) ||
    (form.tables || []).some((t) => t.relevant) ||
    all.some((f) => f.relevant || f.constraint || f.calculation || typeof f.required === "string")
  );
}

function sameAsComputed(field, value, text) {
  if (text === "") return value === null || value === undefined || value === "";
  if (field.type === "number" || field.type === "integer") {
    return typeof value === "number" && numberString(value) === text;
  }
  return value === text;
}

/**
 * The logic's problems with answers (as outpost/forms.py _check_logic_row):
 * [{key, field, table, index, kind}] with kind "hidden" (an answer to a hidden
 * field), "required", "constraint" or "calculation". `skip(key)`: keys whose
 * type is already wrong.
 */
export function logicProblems(state, form, record, tables, complete, skip = () => false) {
  const out = [];
  const rowChecks = (fields, row, table, index, where) => {
    for (const f of fields) {
      const key = `${where}${f.name}`;
      if (skip(key)) continue;
      const value = row[f.name] ?? null;
      if (!state.relevant(f.name, table, index)) {
        if (value !== null) out.push({ key, field: f, table, index, kind: "hidden" });
        continue;
      }
      if (f.calculation) {
        if ((complete || value !== null) && !sameAsComputed(f, value, state.value(f.name, table, index))) {
          out.push({ key, field: f, table, index, kind: "calculation" });
        }
        continue;
      }
      const missing = isMissing(value);
      if (complete && f.required && missing && state.required(f, table, index)) {
        out.push({ key, field: f, table, index, kind: "required" });
        continue;
      }
      if (f.constraint && !missing && !state.allowed(f, table, index)) {
        out.push({ key, field: f, table, index, kind: "constraint" });
      }
    }
  };
  rowChecks(form.fields || [], record, null, 0, "");
  for (const t of form.tables || []) {
    const rows = tables[t.name] || [];
    if (state.tableRelevant[t.name] === false) {
      if (rows.length) out.push({ key: t.name, field: null, table: t.name, index: 0, kind: "hidden" });
      continue;
    }
    rows.forEach((row, i) => rowChecks(t.fields, row, t.name, i, `${t.name}.${i}.`));
  }
  return out;
}
