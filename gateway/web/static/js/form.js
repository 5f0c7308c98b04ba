// A form rendered from its definition (outpost/forms.py): every field type,
// child tables with rows added and removed, photos and signatures.
//
// The form works on a plain model {record: {...}, tables: {name: [row, ...]}}
// that is updated as the crew types; `collect()` returns the envelope's
// record/tables/attachments and the problems to fix first.

import { t } from "./i18n.js";
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

function problemFor(field, value, label) {
  if (value === null || value === undefined || value === "") {
    return field.required ? t("form.is_required", { label }) : null;
  }
  switch (field.type) {
    case "number":
      return typeof value === "number" && Number.isFinite(value) ? null : t("form.must_be_number", { label });
    case "integer":
      return Number.isInteger(value) ? null : t("form.must_be_integer", { label });
    case "text":
      return field.required && !String(value).trim() ? t("form.is_required", { label }) : null;
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
  // Values the crew typed that do not parse (e.g. "12,5," in a number) are kept
  // apart so the form can say so instead of silently dropping them.
  const bad = new Map();
  for (const tbl of form.tables || []) {
    model.tables[tbl.name] = (opts.data?.tables?.[tbl.name] || []).map((r) => ({ ...r }));
  }
  const changed = () => opts.onChange && opts.onChange();

  function fieldControl(field, row, where, label) {
    const id = nextId("f");
    const errId = `${id}-err`;
    const wrap = el("div", { class: `field field-${field.type}`, "data-field": `${where}${field.name}` });
    const reqMark = field.required ? el("span", { class: "req", text: ` ${t("form.required_mark")}` }) : null;
    const value = row[field.name];
    const setValue = (v) => {
      row[field.name] = v;
      changed();
    };
    const common = {
      id,
      name: `${where}${field.name}`,
      "aria-describedby": errId,
      "aria-required": field.required ? "true" : null,
      disabled: readOnly,
    };

    const group = (legendText, ...controls) => {
      const fs = el("fieldset", { class: "choices", "aria-describedby": errId });
      fs.append(el("legend", {}, legendText, reqMark), el("div", { class: "choice-row" }, ...controls));
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
              disabled: readOnly,
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
                disabled: readOnly,
                onchange: () => setValue(o),
              }),
              el("span", { text: o }),
            );
          });
          wrap.append(group(label, ...radios));
        } else {
          const select = el("select", { ...common, onchange: (e) => setValue(e.target.value || null) });
          select.append(el("option", { value: "", text: t("form.choose") }));
          for (const o of options) select.append(el("option", { value: o, text: o, selected: value === o }));
          wrap.append(el("label", { for: id }, label, reqMark), select);
        }
        break;
      }
      case "attachment":
        wrap.append(photoControl(field, value, label, reqMark, setValue, id, errId));
        break;
      case "signature": {
        const holder = el("div", { class: "sig-holder" });
        wrap.append(group(label, holder));
        const mount = (url) => {
          const padCtl = signaturePad({
            label,
            readOnly,
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
        } else {
          input = el("input", { ...common, type: "text" });
          input.value = value ?? "";
          input.addEventListener("input", () => setValue(input.value || null));
        }
        wrap.append(el("label", { for: id }, label, reqMark), input);
      }
    }
    wrap.append(el("p", { class: "field-error", id: errId, "aria-live": "polite" }));
    return wrap;
  }

  function photoControl(field, value, label, reqMark, setValue, id, errId) {
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
    box.append(el("p", { class: "label", id: `${id}-label` }, label, reqMark), preview);
    if (!readOnly) {
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

  function tableSection(table) {
    const rows = model.tables[table.name];
    const title = table.label || humanize(table.name);
    const section = el("section", { class: "table", "aria-label": title, "data-table": table.name });
    const list = el("div", { class: "rows" });
    section.append(el("h3", { text: title }), list);

    function redraw() {
      list.replaceChildren();
      if (!rows.length) list.append(el("p", { class: "muted", text: t("form.no_rows") }));
      rows.forEach((row, i) => {
        const legend = t("form.row", { table: title, n: i + 1 });
        const fs = el("fieldset", { class: "row-card", "data-row": String(i + 1) });
        fs.append(el("legend", { text: legend }));
        for (const f of table.fields) {
          fs.append(fieldControl(f, row, `${table.name}.${i}.`, f.label || humanize(f.name)));
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
                changed();
                redraw();
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
            rows.push({});
            changed();
            redraw();
            const cards = list.querySelectorAll(".row-card");
            const first = cards[cards.length - 1]?.querySelector("input, select, textarea");
            if (first) first.focus();
          },
        }),
      );
    }
    return section;
  }

  const formEl = el("div", { class: "form-body" });
  for (const f of form.fields || []) {
    formEl.append(fieldControl(f, model.record, "", f.label || humanize(f.name)));
  }
  for (const tbl of form.tables || []) formEl.append(tableSection(tbl));
  container.replaceChildren(formEl);

  function showProblems(list) {
    for (const p of formEl.querySelectorAll(".field-error")) p.textContent = "";
    for (const inv of formEl.querySelectorAll("[aria-invalid]")) inv.removeAttribute("aria-invalid");
    for (const { key, message } of list) {
      const wrap = formEl.querySelector(`[data-field="${CSS.escape(key)}"]`);
      if (!wrap) continue;
      wrap.querySelector(".field-error").textContent = message;
      const input = wrap.querySelector("input, select, textarea, fieldset");
      if (input) input.setAttribute("aria-invalid", "true");
    }
  }

  return {
    /** The envelope content, plus problems (required ones only when `complete`). */
    collect(complete) {
      const problems = [];
      const attachments = new Set();
      const check = (fields, row, where, prefix) => {
        const out = {};
        for (const f of fields) {
          const v = row[f.name] ?? null;
          const label = `${prefix}${f.label || humanize(f.name)}`;
          const p = problemFor(f, v, label);
          if (p && (complete || v !== null)) {
            problems.push({ key: `${where}${f.name}`, message: p, required: v === null });
          }
          if ((f.type === "attachment" || f.type === "signature") && v) attachments.add(v);
          out[f.name] = v;
        }
        return out;
      };
      for (const [input, message] of bad) {
        if (input.isConnected) problems.push({ key: input.name, message });
      }
      const record = check(form.fields || [], model.record, "", "");
      const tables = {};
      for (const tbl of form.tables || []) {
        const title = tbl.label || humanize(tbl.name);
        tables[tbl.name] = model.tables[tbl.name].map((row, i) =>
          check(tbl.fields, row, `${tbl.name}.${i}.`, `${t("form.row", { table: title, n: i + 1 })}: `),
        );
      }
      showProblems(problems);
      return { record, tables, attachments: [...attachments], problems };
    },
    /** The form as it stands (for the copy kept on this phone). */
    snapshot() {
      return JSON.parse(JSON.stringify(model));
    },
  };
}
