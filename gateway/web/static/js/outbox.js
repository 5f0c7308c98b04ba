// The device outbox: envelopes (and the photos/signatures they name) wait in
// IndexedDB until the gateway acknowledges them, and are retried while the
// page is open. The envelope id makes every retry safe: the gateway answers
// a repeated id with its first answer.
//
// Order of one delivery: for each attachment, HEAD (how much has arrived),
// PUT the rest in Content-Range chunks; then POST the envelope.

import * as db from "./db.js";
import { t } from "./i18n.js";
import { ApiError, errorText, isReachable, onReachChange, request } from "./api.js";

const CHUNK = 256 * 1024;
const MIN_DELAY = 2000;
const MAX_DELAY = 30000;

export const events = new EventTarget();
let running = false;
let again = false;
let timer = null;
let delay = MIN_DELAY;
let username = null;

function emit() {
  events.dispatchEvent(new Event("change"));
}

export function setUser(name) {
  username = name;
}

/** Store an envelope durably on the device, then try to deliver it. */
export async function enqueue(body, author) {
  await db.put("outbox", {
    envelope_id: body.envelope_id,
    activity_id: body.activity_id,
    seq: body.seq,
    author,
    body,
    state: "waiting", // waiting | refused
    error: null,
    tries: 0,
    queued_at: Date.now(),
  });
  emit();
  kick();
}

/** Everything still on this phone for the signed-in user, oldest first. */
export async function pending() {
  const rows = await db.getAll("outbox");
  return rows
    .filter((r) => !username || r.author === username)
    .sort((a, b) => a.queued_at - b.queued_at || a.seq - b.seq);
}

/** Drop an envelope the gateway refused (the crew saw why and moved on). */
export async function discard(envelopeId) {
  await db.del("outbox", envelopeId);
  emit();
}

/** Try now (and keep trying while the page is open); `fresh` forgets the back-off. */
export function kick(fresh = false) {
  if (fresh) delay = MIN_DELAY;
  clearTimeout(timer);
  timer = null;
  if (running) {
    again = true;
    return;
  }
  running = true;
  flush()
    .catch((err) => console.warn("outbox: delivery pass failed:", err && err.message))
    .finally(() => {
      running = false;
      if (again) {
        again = false;
        kick();
      }
    });
}

function schedule(ms) {
  clearTimeout(timer);
  timer = setTimeout(kick, ms);
}

async function flush() {
  if (!username) return;
  const rows = (await pending()).filter((r) => r.state === "waiting");
  if (!rows.length) {
    delay = MIN_DELAY;
    return;
  }
  for (const row of rows) {
    try {
      await deliver(row);
      if (!username) return; // signed out meanwhile: the device keeps nothing
      await db.del("outbox", row.envelope_id);
      delay = MIN_DELAY;
      events.dispatchEvent(new CustomEvent("delivered", { detail: row.body }));
      emit();
    } catch (err) {
      if (!username) return;
      if (!(err instanceof ApiError) || err.retryable || err.status === 401) {
        // Out of reach or session gone: keep everything, try again later.
        row.tries += 1;
        row.error = errorText(err);
        await db.put("outbox", row);
        emit();
        if (err.status !== 401) schedule(delay);
        delay = Math.min(delay * 2, MAX_DELAY);
        return;
      }
      // The gateway looked at it and said no: keep it visible with its reason.
      row.state = "refused";
      row.error = errorText(err);
      row.code = err.code;
      await db.put("outbox", row);
      emit();
    }
  }
}

async function deliver(row) {
  for (const sha of row.body.attachments || []) await upload(sha);
  for (let attempt = 0; ; attempt++) {
    try {
      await request("POST", "/api/v1/envelopes", { json: row.body });
      return;
    } catch (err) {
      // Another phone saved this activity meanwhile: this envelope was never
      // stored (the gateway checks the id first), so it takes the next number.
      const expected = err instanceof ApiError && err.code === "seq_mismatch" && err.details.expected_seq;
      if (!expected || attempt >= 3) throw err;
      row.body = { ...row.body, seq: expected };
      row.seq = expected;
      await db.put("outbox", row);
      await db.setMeta(`seq:${row.activity_id}`, expected);
    }
  }
}

/** Bytes of `sha256` the gateway already holds, and whether it is complete. */
async function arrived(sha) {
  const resp = await request("HEAD", `/api/v1/attachments/${sha}`, { raw: true });
  if (resp.status === 404) return { offset: 0, complete: false };
  const h = (name) => resp.headers.get(name);
  return { offset: Number(h("Upload-Offset") || 0) || 0, complete: h("X-Upload-Complete") === "true" };
}

async function upload(sha) {
  const rec = await db.get("blobs", sha);
  // A blob never tried before starts at 0 (a PUT of something the gateway
  // already has just answers "complete"); a resumed one asks first.
  const state = rec && !rec.attempted ? { offset: 0, complete: false } : await arrived(sha);
  if (state.complete) return;
  if (!rec) {
    throw new ApiError(409, "blob_missing", t("error.blob_missing"));
  }
  if (!rec.attempted) await db.put("blobs", { ...rec, attempted: true });
  const blob = rec.blob;
  const total = blob.size;
  let offset = Math.min(state.offset, total);
  let resyncs = 0;
  let stalls = 0;
  do {
    const end = Math.min(offset + CHUNK, total);
    const headers = { "Content-Type": "application/octet-stream" };
    if (total) headers["Content-Range"] = `bytes ${offset}-${end - 1}/${total}`;
    const resp = await request("PUT", `/api/v1/attachments/${sha}`, {
      body: blob.slice(offset, end),
      headers,
      raw: true,
      timeout: 60000,
    });
    if (resp.status === 416 && resyncs++ < 3) {
      // The gateway holds less than we thought (its answer says where to go on).
      offset = Math.min(Number(resp.headers.get("Upload-Offset") || 0) || 0, total);
      continue;
    }
    if (!resp.ok) {
      let message = t("error.upload_refused", { status: String(resp.status) });
      let code = `http_${resp.status}`;
      try {
        const data = await resp.json();
        message = data.error.message;
        code = data.error.code;
      } catch {
        // keep the generic sentence
      }
      throw new ApiError(resp.status, code, message);
    }
    if (resp.headers.get("X-Upload-Complete") === "true") return;
    // Go on from what the gateway says is durably on its disk.
    const durable = Number(resp.headers.get("Upload-Offset"));
    const next = Number.isFinite(durable) && resp.headers.has("Upload-Offset") ? durable : end;
    if (next <= offset && ++stalls > 3) throw new ApiError(0, "stalled", t("error.stalled"));
    offset = next;
  } while (offset < total);
}

onReachChange((up) => {
  if (up) kick(true);
});
window.addEventListener("online", () => kick(true));
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && isReachable()) kick();
});
