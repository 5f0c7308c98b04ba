// Talking to the gateway's LAN API, and knowing whether it is in reach.
//
// Every answer that is not JSON success becomes an ApiError with the
// gateway's own sentence ({"error": {"code", "message"}}). A request that
// never reaches the gateway (Wi-Fi out of range, gateway off) is status 0.

import { hasWords, t } from "./i18n.js";

export class ApiError extends Error {
  constructor(status, code, message, details = {}, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details; // the rest of the gateway's error object (problems, expected_seq…)
    this.retryAfter = retryAfter; // seconds, from Retry-After
  }

  /** Worth trying again later (not reached, timeout, gateway busy). */
  get retryable() {
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

let token = null;
const reach = new EventTarget();
let reachable = navigator.onLine;

export function setToken(value) {
  token = value;
}

export function isReachable() {
  return reachable;
}

export function onReachChange(fn) {
  reach.addEventListener("change", () => fn(reachable));
}

function markReach(value) {
  if (value !== reachable) {
    reachable = value;
    reach.dispatchEvent(new Event("change"));
  }
}

export const onSessionLost = new EventTarget();

/**
 * One request. `json` is sent as JSON; `body` as is (a Blob for uploads).
 * Resolves to the Response for `raw`, else to the parsed JSON (or null).
 */
export async function request(method, path, opts = {}) {
  const { json, body, headers = {}, timeout = 15000, raw = false, auth = true } = opts;
  const h = { ...headers };
  if (auth && token) h.Authorization = `Bearer ${token}`;
  let payload = body;
  if (json !== undefined) {
    h["Content-Type"] = "application/json";
    payload = JSON.stringify(json);
  }
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeout);
  let resp;
  try {
    resp = await fetch(path, { method, headers: h, body: payload, signal: ctl.signal, cache: "no-store" });
  } catch (err) {
    markReach(false);
    const timedOut = err && err.name === "AbortError";
    throw new ApiError(
      0,
      timedOut ? "timeout" : "unreachable",
      timedOut ? t("error.timeout") : t("error.unreachable"),
    );
  } finally {
    clearTimeout(timer);
  }
  markReach(true);
  if (!resp.ok && !(raw && resp.status < 500 && resp.status !== 401)) {
    let code = `http_${resp.status}`;
    let message = t("error.http", { status: String(resp.status) });
    let details = {};
    try {
      const data = await resp.json();
      if (data && data.error) {
        code = data.error.code || code;
        message = data.error.message || message;
        details = data.error;
      }
    } catch {
      // not JSON: keep the generic sentence
    }
    if (resp.status === 401 && auth) onSessionLost.dispatchEvent(new Event("lost"));
    const wait = Number(resp.headers.get("Retry-After"));
    throw new ApiError(resp.status, code, message, details, Number.isFinite(wait) && wait > 0 ? wait : null);
  }
  if (raw) return resp;
  if (resp.status === 204) return null;
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

/**
 * The sentence to show a person for a failed request: the app's own words for
 * the gateway's codes it knows (in the phone's language), else the gateway's.
 */
export function errorText(err) {
  if (!(err instanceof ApiError)) return (err && err.message) || t("error.unknown");
  const key = `error.${err.code}`;
  if (hasWords(key)) return t(key, { minutes: Math.max(1, Math.ceil((err.retryAfter || 60) / 60)) });
  return err.message;
}

/** Ask the gateway whether it is there (no sign-in needed). */
export async function ping() {
  try {
    await request("GET", "/healthz", { auth: false, timeout: 5000, raw: true });
  } catch {
    // markReach already recorded it
  }
  return reachable;
}

window.addEventListener("offline", () => markReach(false));
window.addEventListener("online", () => {
  ping();
});
