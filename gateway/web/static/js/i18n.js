// The app's language: which one, its words, and dates and numbers the way
// that language writes them. What the app stores and sends never changes
// with the language (ISO dates, plain numbers); only what a person reads does.
//
//   locale()        the current tag: "en", "pt-BR" or "es"
//   t(key, params)  the app's sentence for `key` in that language
//   pick(value)     a form's label or hint, given as a string or {"en": …, "pt-BR": …}
//
// The language follows the phone's (navigator.languages) until someone picks
// one on the sign-in screen; that choice is kept on this device.

import en from "./locales/en.js";
import es from "./locales/es.js";
import ptBR from "./locales/pt-BR.js";

export const LOCALES = [
  { tag: "en", name: "English", words: en },
  { tag: "pt-BR", name: "Português (Brasil)", words: ptBR },
  { tag: "es", name: "Español", words: es },
];
const BY_TAG = new Map(LOCALES.map((l) => [l.tag, l]));
const FALLBACK = "en";
const STORAGE_KEY = "outpost.locale";

const changes = new EventTarget();
let current = null;

/** The supported tag closest to `wanted` ("pt" and "pt-PT" → "pt-BR", "es-MX" → "es"), or null. */
export function match(wanted) {
  if (!wanted || typeof wanted !== "string") return null;
  const lower = wanted.toLowerCase();
  for (const l of LOCALES) if (l.tag.toLowerCase() === lower) return l.tag;
  const lang = lower.split("-")[0];
  for (const l of LOCALES) if (l.tag.toLowerCase().split("-")[0] === lang) return l.tag;
  return null;
}

function chosen() {
  try {
    return match(localStorage.getItem(STORAGE_KEY));
  } catch {
    return null; // storage disabled
  }
}

function fromBrowser() {
  const wanted = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language];
  for (const w of wanted) {
    const tag = match(w);
    if (tag) return tag;
  }
  return FALLBACK;
}

/** The current locale's tag. */
export function locale() {
  if (current === null) current = chosen() || fromBrowser();
  return current;
}

/** Switch language (the sign-in screen's switch); kept on this device. */
export function setLocale(tag) {
  const next = match(tag) || FALLBACK;
  try {
    localStorage.setItem(STORAGE_KEY, next);
  } catch {
    // storage disabled: the choice lasts while the page is open
  }
  if (next === current) return;
  current = next;
  document.documentElement.lang = next;
  changes.dispatchEvent(new Event("change"));
}

/** The choice made on the sign-in screen (to keep it across the sign-out wipe), or null. */
export function savedChoice() {
  return chosen();
}

export function onLocaleChange(fn) {
  changes.addEventListener("change", () => fn(locale()));
}

const plurals = new Map();
function pluralRules(tag) {
  if (!plurals.has(tag)) plurals.set(tag, new Intl.PluralRules(tag));
  return plurals.get(tag);
}

function lookup(tag, key) {
  const words = (BY_TAG.get(tag) || BY_TAG.get(FALLBACK)).words;
  return Object.prototype.hasOwnProperty.call(words, key) ? words[key] : undefined;
}

/**
 * The sentence for `key`, with `{name}` replaced by params.name. Numbers are
 * written the locale's way. An entry may be {one, other, …} (Intl plural
 * categories), chosen by params.n.
 */
export function t(key, params = {}) {
  const tag = locale();
  let entry = lookup(tag, key);
  if (entry === undefined) entry = lookup(FALLBACK, key);
  if (entry === undefined) {
    console.warn(`i18n: no words for ${key}`);
    return key;
  }
  if (typeof entry === "object") {
    const n = Number(params.n ?? 0);
    entry = entry[pluralRules(tag).select(n)] ?? entry.other;
  }
  return entry.replace(/\{(\w+)\}/g, (whole, name) => {
    if (!(name in params)) return whole;
    const v = params[name];
    return typeof v === "number" ? formatNumber(v) : String(v);
  });
}

/** Whether the app has its own words for `key` (in English at least). */
export function hasWords(key) {
  return lookup(FALLBACK, key) !== undefined;
}

/** A form's label or hint: a string, or per language ({"en": …, "pt-BR": …}). */
export function pick(value) {
  if (value === null || value === undefined) return value;
  if (typeof value !== "object") return String(value);
  const tag = locale();
  if (typeof value[tag] === "string") return value[tag];
  const lang = tag.split("-")[0];
  for (const [k, v] of Object.entries(value)) {
    if (typeof v === "string" && k.toLowerCase().split("-")[0] === lang) return v;
  }
  if (typeof value[FALLBACK] === "string") return value[FALLBACK];
  const first = Object.values(value).find((v) => typeof v === "string");
  return first === undefined ? null : first;
}

/** 1234.5 → "1,234.5" (en), "1.234,5" (pt-BR, es). */
export function formatNumber(n, opts = {}) {
  return new Intl.NumberFormat(locale(), opts).format(n);
}

/** An ISO instant as a date and time in this phone's time zone. */
export function formatDateTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return t("time.unknown");
  return new Intl.DateTimeFormat(locale(), { dateStyle: "medium", timeStyle: "short" }).format(d);
}

/** "4.2 MB" for a person (decimal units, the locale's separators). */
export function formatBytes(bytes) {
  const n = Number(bytes) || 0;
  if (n <= 0) return `${formatNumber(0)} kB`;
  if (n < 1000 * 1000) return `${formatNumber(Math.max(1, Math.round(n / 1000)))} kB`;
  if (n < 1000 * 1000 * 1000) return `${formatNumber(n / 1e6, { maximumFractionDigits: 1 })} MB`;
  return `${formatNumber(n / 1e9, { maximumFractionDigits: 1 })} GB`;
}

/** "5 minutes ago" / "há 5 minutos" / "hace 5 minutos". */
export function relTime(iso) {
  const ms = new Date(iso).getTime();
  if (Number.isNaN(ms)) return t("time.unknown");
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 10 && s > -10) return t("time.just_now");
  if (s < 0) return formatDateTime(iso);
  const rtf = new Intl.RelativeTimeFormat(locale(), { numeric: "always" });
  if (s < 90) return rtf.format(-s, "second");
  if (s < 5400) return rtf.format(-Math.round(s / 60), "minute");
  if (s < 129600) return rtf.format(-Math.round(s / 3600), "hour");
  return rtf.format(-Math.round(s / 86400), "day");
}

/** A length of time: "3 minutes", "2 hours" (no "ago"). */
export function duration(seconds) {
  const s = Math.max(0, Math.round(Number(seconds) || 0));
  const unit = (value, name) =>
    new Intl.NumberFormat(locale(), { style: "unit", unit: name, unitDisplay: "long" }).format(value);
  if (s < 90) return unit(s, "second");
  if (s < 5400) return unit(Math.round(s / 60), "minute");
  if (s < 129600) return unit(Math.round(s / 3600), "hour");
  return unit(Math.round(s / 86400), "day");
}

/** Write the static page's own words (elements with data-i18n) in the current language. */
export function translatePage(root = document) {
  document.documentElement.lang = locale();
  for (const node of root.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
}
