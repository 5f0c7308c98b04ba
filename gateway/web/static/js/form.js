// A form rendered from its definition (outpost/forms.py): every field type,
// child tables with rows added and removed, photos and signatures, groups as
// sections, labels and hints in the phone's language, and the form's logic
// live (formlogic.js): relevance shows and hides fields (a hidden field's
// answer is dropped), calculations fill their fields, and required-if and
// constraint messages appear and disappear as the crew answers.
//
// The form works on a plain model {record: {...}, tables: {name: [row, ...]}}
// that is updated as the crew types; `collect()` returns the envelope's
// record/tables/attachments and the problems to fix first.

import { pick, t } from "./i18n.js";
import { toString } from "./formexpr.js";
import { FormState, logicProblems, storedCalculation } from "./formlogic.js";
import { signaturePad } from "./signature.js";

let uid = 0;
const nextId = (prefix) => `${prefix}-${++uid}`;

export function humanize(name) {
  const s = name.replace(/_/g, " ");
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

const pad = (n) => String(n).padStart(2, "0");

/** ISO instant -> value of an <input type=datetime-local> in this phone's time zone. */
export function isoToLocalInput(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function localInputToIso(value) {
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? null : d.toISOString();
}

/** The field's label in the phone's language (else one derived from its name). */
export const labelOf = (item) => pick(item.label) || humanize(item.name);

/** This phone's date, as today() reads it. */
export function localToday() {
  const d = new Date();
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

// Fields whose value is computed, never typed (shown read-only).
const computed = (field) => !!field.calculation;

function typeProblem(field, value, label) {
  if (value === null || value === undefined || value === "") return null;
  switch (field.type) {
    case "number":
      return typeof value === "number" && Number.isFinite(value) ? null : t("form.must_be_number", { label });
    case "integer":
      return Number.isInteger(value) ? null : t("form.must_be_integer", { label });
    default:
      return null;
  }
}

/**
 * Render `form` into `container`.
 * opts: readOnly, data {record, tables}, onChange(), blobUrl(sha) -> Promise<url|null>,
 *       storeBlob(blob) -> Promise<sha256>
 */
export function renderForm(container, form, opts) {
  const readOnly = !!opts.readOnly;
  const model = {
    record: { ...(opts.data?.record || {}) },
    tables: {},
  };
  // A default fills a field the form has never stored (a saved answer, even
  // an empty one, is kept).
  const withDefaults = (fields, row) => {
    if (readOnly) return row;
    for (const f of fields) {
      if (!(f.name in row) && f.default !== undefined && f.default !== null) row[f.name] = f.default;
    }
    return row;
  };
  withDefaults(form.fields || [], model.record);
  // Values the crew typed that do not parse (e.g. "12,5," in a number) are kept
  // apart so the form can say so instead of silently dropping them.
  const bad = new Map();
  for (const tbl of form.tables || []) {
    model.tables[tbl.name] = (opts.data?.tables?.[tbl.name] || []).map((r) => ({ ...r }));
  }
  // Every control on screen, by its key ("name" or "table.row.name").
  const controls = new Map();
  let checkingComplete = false; // "Mark completed" was pressed: required ones count too
  let logic = null;
  const changed = () => {
    refresh();
    if (opts.onChange) opts.onChange();
  };

  function fieldControl(field, row, where, label) {
    const id = nextId("f");
    const errId = `${id}-err`;
    const hintText = pick(field.hint);
    const hintId = hintText ? `${id}-hint` : null;
    const described = hintId ? `${hintId} ${errId}` : errId;
    const wrap = el("div", { class: `field field-${field.type}`, "data-field": `${where}${field.name}` });
    // A required-if field shows the mark while its condition holds (applyLogic keeps it current).
    const reqMark = field.required ? el("span", { class: "req", text: ` ${t("form.required_mark")}`, hidden: field.required !== true }) : null;
    const hint = hintText ? el("p", { class: "hint", id: hintId, text: hintText, "data-template": hintText.includes("${") ? hintText : null }) : ""; // DOM append() writes null as "null"
    const value = row[field.name];
    const locked = readOnly || !!field.read_only || computed(field);
    const setValue = (v) => {
      row[field.name] = v;
      changed();
    };
    const common = {
      id,
      name: `${where}${field.name}`,
      "aria-describedby": described,
      "aria-required": field.required === true ? "true" : null,
      disabled: locked,
    };
    const optionText = (o) => pick(field.option_labels?.[o]) || o;
    // The label's text, in its own node: a label may quote answers (${name}), kept current.
    const labelSpan = () => el("span", { class: "label-text", text: label });

    const group = (legendText, ...items) => {
      const fs = el("fieldset", { class: "choices", "aria-describedby": described });
      fs.append(el("legend", {}, labelSpan(), reqMark), hint, el("div", { class: "choice-row" }, ...items));
      return fs;
    };

    switch (field.type) {
      case "boolean": {
        const name = nextId("b");
        const opt = (v, text) => {
          const rid = nextId("r");
          return el(
            "label",
            { class: "choice", for: rid },
            el("input", {
              type: "radio",
              id: rid,
              name,
              value: String(v),
              checked: value === v,
              disabled: locked,
              onchange: () => setValue(v),
            }),
            el("span", { text }),
          );
        };
        wrap.append(group(label, opt(true, t("form.yes")), opt(false, t("form.no"))));
        break;
      }
      case "choice": {
        const options = field.options || [];
        if (options.length <= 6) {
          const name = nextId("c");
          const radios = options.map((o) => {
            const rid = nextId("r");
            return el(
              "label",
              { class: "choice", for: rid },
              el("input", {
                type: "radio",
                id: rid,
                name,
                value: o,
                checked: value === o,
                disabled: locked,
                onchange: () => setValue(o),
              }),
              el("span", { text: optionText(o) }),
            );
          });
          wrap.append(group(label, ...radios));
        } else {
          const select = el("select", { ...common, onchange: (e) => setValue(e.target.value || null) });
          select.append(el("option", { value: "", text: t("form.choose") }));
          for (const o of options) select.append(el("option", { value: o, text: optionText(o), selected: value === o }));
          wrap.append(el("label", { for: id }, labelSpan(), reqMark), hint, select);
        }
        break;
      }
      case "multichoice": {
        const options = field.options || [];
        const chosen = new Set(Array.isArray(value) ? value : []);
        const boxes = options.map((o) => {
          const cid = nextId("m");
          return el(
            "label",
            { class: "choice choice-multi", for: cid },
            el("input", {
              type: "checkbox",
              id: cid,
              value: o,
              checked: chosen.has(o),
              disabled: locked,
              onchange: (e) => {
                if (e.target.checked) chosen.add(o);
                else chosen.delete(o);
                const list = options.filter((x) => chosen.has(x));
                setValue(list.length ? list : null);
              },
            }),
            el("span", { text: optionText(o) }),
          );
        });
        wrap.append(group(label, ...boxes));
        break;
      }
      case "acknowledge": {
        const cid = nextId("a");
        wrap.append(
          el(
            "label",
            { class: "choice choice-multi acknowledge", for: cid },
            el("input", {
              type: "checkbox",
              id: cid,
              name: `${where}${field.name}`,
              checked: value === true,
              disabled: locked,
              "aria-describedby": described,
              onchange: (e) => setValue(e.target.checked ? true : null),
            }),
            el("span", {}, labelSpan(), reqMark),
          ),
          hint,
        );
        break;
      }
      case "note":
        wrap.append(el("p", { class: "note-text" }, labelSpan()), hint);
        break;
      case "calculate":
        wrap.hidden = true; // a calculate holds a value for the logic; it is not shown (ODK)
        break;
      case "attachment":
        wrap.append(photoControl(field, value, label, reqMark, setValue, id, errId, locked));
        break;
      case "signature": {
        const holder = el("div", { class: "sig-holder" });
        wrap.append(group(label, holder));
        const mount = (url) => {
          const padCtl = signaturePad({
            label,
            readOnly: locked,
            imageUrl: url,
            onDone: async (blob) => {
              setValue(blob ? await opts.storeBlob(blob) : null);
            },
          });
          holder.replaceChildren(padCtl.element);
        };
        if (value && opts.blobUrl) opts.blobUrl(value).then(mount);
        else mount(null);
        break;
      }
      default: {
        let input;
        if (field.type === "text") {
          const tag = where ? "input" : "textarea";
          input = el(tag, { ...common, type: where ? "text" : null, rows: where ? null : "3", autocomplete: "off" });
          input.value = value ?? "";
          input.addEventListener("input", () => setValue(input.value === "" ? null : input.value));
        } else if (field.type === "number" || field.type === "integer") {
          input = el("input", {
            ...common,
            type: "number",
            inputmode: field.type === "integer" ? "numeric" : "decimal",
            step: field.type === "integer" ? "1" : "any",
          });
          input.value = value ?? "";
          input.addEventListener("input", () => {
            const raw = input.value.trim();
            if (raw === "" && !input.validity.badInput) {
              bad.delete(input);
              setValue(null);
              return;
            }
            const n = Number(raw);
            if (raw === "" || !Number.isFinite(n)) {
              bad.set(input, t("form.must_be_number", { label }));
              setValue(null);
            } else {
              bad.delete(input);
              setValue(n);
            }
          });
        } else if (field.type === "date") {
          input = el("input", { ...common, type: "date" });
          input.value = value ?? "";
          input.addEventListener("input", () => setValue(input.value || null));
        } else if (field.type === "datetime") {
          input = el("input", { ...common, type: "datetime-local" });
          input.value = value ? isoToLocalInput(value) : "";
          input.addEventListener("input", () => setValue(input.value ? localInputToIso(input.value) : null));
        } else if (field.type === "time") {
          input = el("input", { ...common, type: "time" });
          input.value = value ?? "";
          input.addEventListener("input", () => setValue(input.value || null));
        } else {
          input = el("input", { ...common, type: "text" });
          input.value = value ?? "";
          input.addEventListener("input", () => setValue(input.value || null));
        }
        wrap.append(el("label", { for: id }, labelSpan(), reqMark), hint, input);
      }
    }
    wrap.append(el("p", { class: "field-error", id: errId, "aria-live": "polite" }));
    return wrap;
  }

  /** Draw a field and remember it (key, where it lives) for the logic. */
  function placeField(field, row, where, label, table, index) {
    const key = `${where}${field.name}`;
    const entry = { field, row, where, label, table, index, wrap: fieldControl(field, row, where, label) };
    controls.set(key, entry);
    return entry.wrap;
  }

  /** Redraw one control from the model (a dropped or recomputed answer). */
  function redrawField(entry) {
    const fresh = fieldControl(entry.field, entry.row, entry.where, entry.label);
    fresh.hidden = entry.wrap.hidden;
    entry.wrap.replaceWith(fresh);
    entry.wrap = fresh;
  }

  function photoControl(field, value, label, reqMark, setValue, id, errId, locked = readOnly) {
    const box = el("div", { class: "photo" });
    const preview = el("div", { class: "photo-preview" });
    const show = (sha) => {
      preview.replaceChildren();
      if (!sha) {
        preview.append(el("p", { class: "muted", text: t("form.no_photo") }));
        return;
      }
      const img = el("img", { alt: t("form.photo_alt", { label }), class: "photo-img" });
      preview.append(img);
      if (opts.blobUrl) {
        opts.blobUrl(sha).then((url) => {
          if (url) img.src = url;
          else img.replaceWith(el("p", { class: "muted", text: t("form.photo_on_gateway") }));
        });
      }
    };
    show(value);
    const hintText = pick(field.hint);
    box.append(el("p", { class: "label", id: `${id}-label` }, label, reqMark), hintText ? el("p", { class: "hint", text: hintText }) : "", preview);
    if (!locked) {
      const input = el("input", {
        type: "file",
        id,
        accept: "image/*",
        capture: "environment",
        class: "visually-hidden",
        "aria-label": t("form.take_photo_label", { label }),
        "aria-describedby": errId,
      });
      const pick = el("label", { for: id, class: "btn btn-secondary" }, value ? t("form.retake_photo") : t("form.take_photo"));
      const remove = el("button", { type: "button", class: "btn btn-secondary", text: t("form.remove_photo"), hidden: !value });
      input.addEventListener("change", async () => {
        const file = input.files && input.files[0];
        if (!file) return;
        pick.textContent = t("form.saving_photo");
        const sha = await opts.storeBlob(file);
        setValue(sha);
        show(sha);
        pick.textContent = t("form.retake_photo");
        remove.hidden = false;
        input.value = "";
      });
      remove.addEventListener("click", () => {
        setValue(null);
        show(null);
        pick.textContent = t("form.take_photo");
        remove.hidden = true;
      });
      box.append(el("div", { class: "row-actions" }, input, pick, remove));
    }
    return box;
  }

  const tableSections = new Map();

  function tableSection(table) {
    const rows = model.tables[table.name];
    const title = labelOf(table);
    const section = el("section", { class: "table", "aria-label": title, "data-table": table.name });
    const list = el("div", { class: "rows" });
    const hintText = pick(table.hint);
    section.append(el("h3", { text: title }), hintText ? el("p", { class: "hint", text: hintText }) : "", list);

    function redraw() {
      for (const key of [...controls.keys()]) if (key.startsWith(`${table.name}.`)) controls.delete(key);
      list.replaceChildren();
      if (!rows.length) list.append(el("p", { class: "muted", text: t("form.no_rows") }));
      rows.forEach((row, i) => {
        const legend = t("form.row", { table: title, n: i + 1 });
        const fs = el("fieldset", { class: "row-card", "data-row": String(i + 1) });
        fs.append(el("legend", { text: legend }));
        for (const f of table.fields) {
          fs.append(placeField(f, row, `${table.name}.${i}.`, labelOf(f), table.name, i));
        }
        if (!readOnly) {
          fs.append(
            el("button", {
              type: "button",
              class: "btn btn-danger",
              text: t("form.remove_row", { n: i + 1 }),
              "aria-label": t("form.remove_row_label", { row: legend }),
              onclick: () => {
                rows.splice(i, 1);
                redraw();
                changed();
              },
            }),
          );
        }
        list.append(fs);
      });
    }
    redraw();
    if (!readOnly) {
      section.append(
        el("button", {
          type: "button",
          class: "btn btn-secondary add-row",
          text: t("form.add_row", { table: title.toLowerCase() }),
          onclick: () => {
            rows.push(withDefaults(table.fields, {}));
            redraw();
            changed();
            const cards = list.querySelectorAll(".row-card");
            const first = cards[cards.length - 1]?.querySelector("input:not([disabled]), select, textarea");
            if (first) first.focus();
          },
        }),
      );
    }
    tableSections.set(table.name, { section, redraw });
    return section;
  }

  // Groups are sections on screen, placed where their first item comes.
  const groupDefs = new Map((form.groups || []).map((g) => [g.name, g]));
  const groupSections = new Map();
  const formEl = el("div", { class: "form-body" });
  const holderFor = (groupName) => {
    if (!groupName || !groupDefs.has(groupName)) return formEl;
    let g = groupSections.get(groupName);
    if (!g) {
      const def = groupDefs.get(groupName);
      const hid = nextId("g");
      const body = el("div", { class: "group-body" });
      const section = el(
        "section",
        { class: "group", "data-group": groupName, "aria-labelledby": hid },
        el("h2", { id: hid, text: labelOf(def) }),
        body,
      );
      formEl.append(section);
      g = { section, body };
      groupSections.set(groupName, g);
    }
    return g.body;
  };
  for (const f of form.fields || []) {
    holderFor(f.group).append(placeField(f, model.record, "", labelOf(f), null, 0));
  }
  for (const tbl of form.tables || []) holderFor(tbl.group).append(tableSection(tbl));
  container.replaceChildren(formEl);

  // ${name} in a label or hint shows that answer (XLSForm), as it stands now.
  const interpolate = (text, table, index) =>
    text.includes("${") ? text.replace(/\$\{([a-z][a-z0-9_]{0,62})\}/g, (_, name) => toString(logic.scope(table, index).value(name))) : text;

  /** The logic over the model until it settles (a default coming back can move it again). */
  function applyLogic() {
    for (let i = 0; i < 3 && applyLogicOnce(); i++);
  }

  /** Run the logic over the model once: show/hide, drop hidden answers, fill calculations. */
  function applyLogicOnce() {
    let moved = false;
    logic = new FormState(form, model.record, model.tables, localToday());
    for (const [name, g] of groupSections) g.section.hidden = logic.groupRelevant[name] === false;
    for (const tbl of form.tables || []) {
      const ts = tableSections.get(tbl.name);
      const shown = logic.tableRelevant[tbl.name] !== false;
      ts.section.hidden = !shown;
      if (!shown && model.tables[tbl.name].length && !readOnly) {
        model.tables[tbl.name].length = 0; // a hidden table keeps no rows
        ts.redraw();
      }
    }
    for (const entry of controls.values()) {
      const { field, row, table, index } = entry;
      const rel = logic.relevant(field.name, table, index);
      const wasHidden = entry.hidden;
      entry.hidden = !rel;
      entry.wrap.hidden = !rel || field.type === "calculate";
      if (rel && typeof field.required === "string") {
        const now = logic.required(field, table, index);
        for (const mark of entry.wrap.querySelectorAll(".req")) mark.hidden = !now;
        for (const input of entry.wrap.querySelectorAll("[aria-required], input, select, textarea")) {
          if (input.type === "radio" || input.type === "checkbox") continue;
          if (now) input.setAttribute("aria-required", "true");
          else input.removeAttribute("aria-required");
        }
      }
      if (entry.label.includes("${")) {
        const text = interpolate(entry.label, table, index);
        for (const span of entry.wrap.querySelectorAll(".label-text")) if (span.textContent !== text) span.textContent = text;
      }
      for (const hintEl of entry.wrap.querySelectorAll(".hint[data-template]")) {
        const text = interpolate(hintEl.dataset.template, table, index);
        if (hintEl.textContent !== text) hintEl.textContent = text;
      }
      if (readOnly) continue;
      if (!rel) {
        if (row[field.name] !== null && row[field.name] !== undefined) {
          row[field.name] = null; // the answer of a hidden field is not kept
          redrawField(entry);
          moved = true;
        }
      } else if (field.calculation) {
        const want = storedCalculation(field, logic.value(field.name, table, index));
        if (row[field.name] !== want && !(row[field.name] == null && want == null)) {
          row[field.name] = want;
          if (field.type !== "calculate") redrawField(entry);
          moved = true;
        }
      } else if (wasHidden && row[field.name] == null && field.default !== undefined && field.default !== null) {
        row[field.name] = field.default; // shown again: it starts from its default, as when the form opened
        redrawField(entry);
        moved = true;
      }
    }
    return moved;
  }

  /** Problems as they stand: answered fields always, required ones after "Mark completed". */
  function currentProblems(complete) {
    const problems = [];
    for (const [input, message] of bad) {
      if (input.isConnected) problems.push({ key: input.name, message });
    }
    const badKeys = new Set(problems.map((p) => p.key));
    const labelFor = (key, field, table, index) => {
      const entry = controls.get(key);
      const label = interpolate(entry ? entry.label : labelOf(field), table, index);
      if (table === null) return label;
      const tbl = (form.tables || []).find((x) => x.name === table);
      return `${t("form.row", { table: labelOf(tbl), n: index + 1 })}: ${label}`;
    };
    for (const [key, entry] of controls) {
      const { field, row, table, index } = entry;
      if (field.type === "note" || computed(field) || !logic.relevant(field.name, table, index)) continue;
      const typed = typeProblem(field, row[field.name] ?? null, labelFor(key, field, table, index));
      if (typed) {
        problems.push({ key, message: typed });
        badKeys.add(key);
      }
    }
    // Hidden answers were dropped and calculations filled in (applyLogic), so
    // what is left is what the crew must fix: required ones and constraints.
    for (const p of logicProblems(logic, form, model.record, model.tables, complete, (k) => badKeys.has(k))) {
      if (p.kind !== "required" && p.kind !== "constraint") continue;
      const label = labelFor(p.key, p.field, p.table, p.index);
      const message =
        p.kind === "required"
          ? pick(p.field.required_message) || t("form.is_required", { label })
          : pick(p.field.constraint_message) || t("form.not_allowed", { label });
      problems.push({ key: p.key, message, required: p.kind === "required" });
    }
    return problems;
  }

  function showProblems(list) {
    const byKey = new Map();
    for (const p of list) if (!byKey.has(p.key)) byKey.set(p.key, p.message);
    for (const [key, entry] of controls) {
      const message = byKey.get(key) || "";
      const err = entry.wrap.querySelector(".field-error");
      if (err && err.textContent !== message) err.textContent = message;
      const input = entry.wrap.querySelector("input, select, textarea, fieldset");
      if (!input) continue;
      if (message) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    }
  }

  function refresh() {
    applyLogic();
    const list = currentProblems(checkingComplete);
    showProblems(list);
    if (opts.onProblems) opts.onProblems(list);
  }
  applyLogic();

  return {
    /** The envelope content, plus problems (required ones only when `complete`). */
    collect(complete) {
      checkingComplete = complete;
      applyLogic();
      const problems = currentProblems(complete);
      showProblems(problems);
      const attachments = new Set();
      const pickRow = (fields, row, table, index) => {
        const out = {};
        for (const f of fields) {
          const asked = logic.relevant(f.name, table, index);
          const v = asked && f.type !== "note" ? row[f.name] ?? null : null;
          if ((f.type === "attachment" || f.type === "signature") && v) attachments.add(v);
          out[f.name] = v;
        }
        return out;
      };
      const record = pickRow(form.fields || [], model.record, null, 0);
      const tables = {};
      for (const tbl of form.tables || []) {
        tables[tbl.name] = model.tables[tbl.name].map((row, i) => pickRow(tbl.fields, row, tbl.name, i));
      }
      return { record, tables, attachments: [...attachments], problems };
    },
    /** Move to the first field with a problem (after "Mark completed" found some). */
    focusFirstProblem() {
      const wrap = formEl.querySelector("[aria-invalid=true]")?.closest("[data-field]");
      const target = wrap && wrap.querySelector("input:not([disabled]), select, textarea, canvas, button, label.btn");
      if (target) {
        target.focus();
        target.scrollIntoView({ block: "center" });
        return true;
      }
      return false;
    },
    /** The form as it stands (for the copy kept on this phone). */
    snapshot() {
      return JSON.parse(JSON.stringify(model));
    },
  };
}
