// Outpost crew app: sign in, see your offline activities, fill them in, see
// what is pending. Everything the crew saves goes first to IndexedDB on the
// phone (the outbox), then to the gateway; nothing is lost when the phone
// walks out of Wi-Fi range.

import * as api from "./api.js";
import { errorText } from "./api.js";
import * as db from "./db.js";
import * as outbox from "./outbox.js";
import { humanize, renderForm } from "./form.js";
import { sha256Blob } from "./sha256.js";
import { uuid4 } from "./uuid.js";
import {
  LOCALES,
  duration,
  formatBytes,
  formatDateTime,
  formatNumber,
  locale,
  savedChoice,
  setLocale,
  t,
  translatePage,
} from "./i18n.js";
import { badgeFor, plainCode, rejectionReason, relTime } from "./words.js";

const REFRESH_MS = 15000;
// Required answers are checked on completion only (outpost/forms.py, the same
// rule on the gateway and at central): a draft can be saved any time.
const PING_MS = 3000;
const ENVELOPE_STATES = ["stored", "queued", "sent", "applied", "rejected"];
const SYNCING_REFRESH_MS = 2000;

const state = {
  session: null, // {token, user: {username, display_name}, expires_at}
  activities: [], // list entries (with details once fetched)
  envelopes: [], // the gateway's view of the user's envelopes
  status: null, // GET /api/v1/status
  outbox: [], // envelopes still on this phone
  fetchedAt: null,
};

const $ = (sel) => document.querySelector(sel);
const main = () => $("#main");
let current = null; // the screen's refresh function
let refreshTimer = null;
let pingTimer = null;
const blobUrls = new Map();

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) node.append(c);
  return node;
}

// --- small UI helpers ---------------------------------------------------------

let toastTimer = null;
function toast(message, kind = "info") {
  const box = $("#toast");
  box.textContent = message;
  box.className = `toast toast-${kind} show`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => box.classList.remove("show"), 5000);
}

/** A yes/no question in a real <dialog> (window.confirm is blocked in some webviews). */
function ask(title, text, yes, no = t("common.cancel"), danger = false) {
  const dlg = $("#ask");
  $("#ask-title").textContent = title;
  $("#ask-text").textContent = text;
  const ok = $("#ask-yes");
  ok.textContent = yes;
  ok.className = danger ? "btn btn-danger" : "btn btn-primary";
  $("#ask-no").textContent = no;
  return new Promise((resolve) => {
    dlg.returnValue = "";
    const done = () => {
      dlg.removeEventListener("close", done);
      resolve(dlg.returnValue === "yes");
    };
    dlg.addEventListener("close", done);
    dlg.showModal();
  });
}

function setTitle(text) {
  document.title = text ? `${text} · Outpost` : "Outpost";
}

function renderReach() {
  const up = api.isReachable();
  const box = $("#reach");
  box.className = up ? "reach reach-up" : "reach reach-down";
  box.replaceChildren(
    el("span", { class: "dot", "aria-hidden": "true" }),
    el("span", { text: up ? t("reach.up") : t("reach.down") }),
  );
  box.title = up
    ? t("reach.up_detail")
    : t("reach.down_detail");
}

function renderNav() {
  const nav = $("#nav");
  if (!state.session) {
    nav.hidden = true;
    $("#who").textContent = "";
    return;
  }
  nav.hidden = false;
  const waiting = state.outbox.filter((r) => r.state === "waiting").length;
  const rejected = openRejections().length + state.outbox.filter((r) => r.state === "refused").length;
  const route = location.hash || "#/activities";
  const link = (href, text, extra) =>
    el(
      "a",
      {
        href,
        class: "nav-link",
        "aria-current": route.startsWith(href) ? "page" : null,
      },
      text,
      extra,
    );
  const count = waiting + rejected;
  const siteTab = isSiteLead() ? link("#/site", t("nav.site")) : ""; // replaceChildren() writes null as "null"
  nav.replaceChildren(
    link("#/activities", t("nav.activities")),
    link(
      "#/pending",
      t("nav.pending"),
      count ? el("span", { class: "count", "aria-label": t("nav.attention", { n: count }) }, formatNumber(count)) : null,
    ),
    siteTab,
    el("button", { type: "button", class: "nav-link nav-signout", id: "signout", text: t("nav.sign_out"), onclick: signOut }),
  );
  const who = state.session.user;
  const site = state.status && state.status.gateway && state.status.gateway.site;
  $("#who").textContent = [who ? who.display_name || who.username : "", site].filter(Boolean).join(" · ");
}

// --- data --------------------------------------------------------------------

/** Refused envelopes that are still their activity's newest (not corrected since). */
function openRejections() {
  return state.envelopes.filter(
    (e) =>
      e.state === "rejected" &&
      !state.envelopes.some((x) => x.activity_id === e.activity_id && x.seq > e.seq) &&
      !state.outbox.some((r) => r.activity_id === e.activity_id),
  );
}

function listOf(data, key) {
  if (Array.isArray(data)) return data;
  if (data && Array.isArray(data[key])) return data[key];
  if (data && Array.isArray(data.items)) return data.items;
  return [];
}

async function loadLocal() {
  const [acts, box] = await Promise.all([db.getAll("activities"), outbox.pending()]);
  // Work still to do first; finished (checked in) and canceled ones after it.
  const done = (a) => (a.state === "checked_in" || a.status === "canceled" ? 1 : 0);
  state.activities = acts.sort((a, b) => done(a) - done(b) || (a.title || "").localeCompare(b.title || ""));
  state.outbox = box;
  const cached = await db.getMeta("gateway_view");
  if (cached) {
    state.envelopes = cached.envelopes || [];
    state.status = cached.status || null;
    state.fetchedAt = cached.fetchedAt || null;
  }
}

let refreshing = null;
let refreshAgain = false;

/** Fetch the user's activities (with their forms, for offline use), envelopes, status. */
function refresh() {
  if (refreshing) {
    refreshAgain = true;
    return refreshing;
  }
  refreshing = doRefresh().finally(() => {
    refreshing = null;
    if (refreshAgain) {
      refreshAgain = false;
      refresh();
    }
  });
  return refreshing;
}

async function doRefresh() {
  if (!state.session) return;
  try {
    const [acts, envs, status, me] = await Promise.all([
      api.request("GET", "/api/v1/activities"),
      api.request("GET", "/api/v1/envelopes"),
      api.request("GET", "/api/v1/status"),
      // Who the gateway says we are now: central may have granted or taken the site lead.
      api.request("GET", "/api/v1/session").catch(() => null),
    ]);
    if (!state.session) return; // signed out meanwhile
    if (me && me.user && !!me.user.site_lead !== isSiteLead()) await setSiteLead(!!me.user.site_lead);
    const list = listOf(acts, "activities");
    const prior = await db.getAll("activities");
    const cached = new Map(prior.map((p) => [p.id, p]));
    // The form and the latest envelope's content come with the detail: fetch it
    // only for activities that are new or changed since the last look.
    const changed = (a) => {
      const c = cached.get(a.id);
      return (
        !c ||
        !c.form ||
        ["envelopes", "next_seq", "status", "version", "form_version"].some((k) => c[k] !== a[k]) ||
        JSON.stringify(c.review || null) !== JSON.stringify(a.review || null)
      );
    };
    const details = await Promise.all(
      list.map((a) =>
        changed(a) ? api.request("GET", `/api/v1/activities/${encodeURIComponent(a.id)}`).catch(() => null) : null,
      ),
    );
    if (!state.session) return;
    const keep = new Set();
    const rows = list.map((a, i) => {
      keep.add(a.id);
      const prev = cached.get(a.id) || {};
      // Listed by the gateway: offline again even if this phone saw it checked in
      // (central sent it back for another round).
      return { ...prev, ...a, ...(details[i] || {}), id: a.id, state: "offline", forms: keptForms(prev, details[i]) };
    });
    await db.putMany(rows.map((r) => ["activities", r]));
    state.envelopes = listOf(envs, "envelopes");
    // An activity leaves the gateway's list once central applied its completed
    // upload (checked in): keep showing it as applied while the gateway still
    // reports that envelope, or while this phone holds unsent work for it.
    const box = await outbox.pending();
    for (const p of prior) {
      if (keep.has(p.id)) continue;
      const applied = state.envelopes.some(
        (e) => e.activity_id === p.id && e.status === "completed" && e.state === "applied",
      );
      if (applied) await db.put("activities", { ...p, state: "checked_in", read_only: true });
      else if (!box.some((r) => r.activity_id === p.id)) await db.del("activities", p.id);
    }
    state.status = status;
    state.fetchedAt = new Date().toISOString();
    await db.setMeta("gateway_view", { envelopes: state.envelopes, status, fetchedAt: state.fetchedAt });
    await loadLocal();
  } catch (err) {
    if (!(err instanceof api.ApiError) || !err.retryable) console.warn("refresh:", err.message);
  }
  if (state.session && current) current();
  renderNav();
}

/** Poll faster while the user's work is on its way to central (badges move by themselves). */
function refreshDelay() {
  const up = backhaulUp(state.status);
  const moving = state.envelopes.some((e) => e.state === "sent" || (up && e.state === "queued"));
  return moving ? SYNCING_REFRESH_MS : REFRESH_MS;
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  clearInterval(pingTimer);
  const tick = async () => {
    if (!state.session) return;
    if (document.visibilityState === "visible" && api.isReachable()) await refresh();
    if (state.session) refreshTimer = setTimeout(tick, refreshDelay());
  };
  refreshTimer = setTimeout(tick, refreshDelay());
  pingTimer = setInterval(() => {
    if (!api.isReachable()) api.ping();
  }, PING_MS);
}

async function blobUrl(sha) {
  if (blobUrls.has(sha)) return blobUrls.get(sha);
  const rec = await db.get("blobs", sha);
  if (!rec) return null;
  const url = URL.createObjectURL(rec.blob);
  blobUrls.set(sha, url);
  return url;
}

async function storeBlob(blob) {
  const sha = await sha256Blob(blob);
  await db.put("blobs", { sha256: sha, blob, type: blob.type, size: blob.size, saved_at: Date.now() });
  return sha;
}

/** Every envelope known for an activity: the gateway's and this phone's, by seq. */
const KEPT_FORMS = 4; // versions of one activity's form kept on the phone

/**
 * Every form version this phone was given for an activity, by number: a
 * draft begun on version 1 is shown and checked on version 1 after the
 * gateway got version 2 (docs/forms.md, "Form versions").
 */
function keptForms(prev, detail) {
  const forms = { ...(prev.forms || {}) };
  if (prev.form && prev.form_version && !forms[prev.form_version]) forms[prev.form_version] = prev.form;
  if (detail && detail.form && detail.form_version) forms[detail.form_version] = detail.form;
  // The version the gateway gives now stays, with the newest others beside it.
  const given = Number((detail && detail.form_version) || prev.form_version || 0);
  const others = Object.keys(forms).map(Number).filter((v) => v !== given).sort((x, y) => y - x);
  const kept = [given, ...others].filter((v) => forms[v]).slice(0, KEPT_FORMS);
  return Object.fromEntries(kept.map((v) => [v, forms[v]]));
}

/**
 * The form a draft is on, and its version: the version of the crew's work in
 * progress, else of the activity's latest save this round (on the phone or the
 * gateway), else the one the gateway gives (filled against) -- when this phone
 * holds it. A save refused for naming a version the gateway lacks names none.
 */
function formFor(activity, latest, work) {
  const lacked = latest && latest.state === "refused" && latest.code === "form_version" ? latestVersion(latest) : null;
  const forms = activity.forms || {};
  for (const v of [work && work.form_version, latestVersion(latest)]) {
    if (v && v !== lacked && forms[v]) return { form: forms[v], version: v };
  }
  return { form: activity.form || { fields: [], tables: [] }, version: activity.form_version || null };
}

function latestVersion(latest) {
  if (!latest) return null;
  return latest.form_version || (latest.body && latest.body.form_version) || null;
}

function envelopesOf(activityId) {
  const server = state.envelopes
    .filter((e) => e.activity_id === activityId)
    .map((e) => ({ ...e, where: "gateway" }));
  const local = state.outbox
    .filter((r) => r.activity_id === activityId)
    .map((r) => ({
      envelope_id: r.envelope_id,
      activity_id: r.activity_id,
      seq: r.seq,
      status: r.body.status,
      state: r.state === "refused" ? "refused" : "on_phone",
      reason: r.error,
      code: r.code,
      where: "phone",
      body: r.body,
    }));
  const ids = new Set(server.map((e) => e.envelope_id));
  return [...server, ...local.filter((e) => !ids.has(e.envelope_id))].sort((a, b) => a.seq - b.seq);
}

function latestOf(activity) {
  const all = envelopesOf(activity.id);
  const fromDetail = activity.latest_envelope;
  let latest = all[all.length - 1] || null;
  if (fromDetail && (!latest || fromDetail.seq > latest.seq)) latest = { ...fromDetail, where: "gateway" };
  // The envelope list has the fresh state; the detail has the content.
  else if (fromDetail && fromDetail.seq === latest.seq && !latest.body) latest = { ...fromDetail, ...latest };
  return latest;
}

/** The latest envelope of the activity's current round (central may have sent it back). */
function latestThisRound(activity) {
  const latest = latestOf(activity);
  return latest && latest.seq > (activity.round_after || 0) ? latest : null;
}

/** The status badge, with "Sent back" for an activity central returned with a note. */
function badgeOf(activity, latest) {
  if (activity.review && !latest && activity.status !== "canceled") {
    return {
      key: "sent_back",
      label: t("badge.sent_back"),
      icon: "↩",
      detail: t("badge.detail.sent_back", { note: activity.review.note }),
    };
  }
  return badgeFor(activity, latest);
}

/** Central's note on an activity it sent back, as a block for the activity screen. */
function reviewNote(activity, latest) {
  const r = activity.review;
  if (!r) return null;
  const done = latest && latest.status === "completed";
  return el(
    "div",
    { class: "alert alert-warn", role: "status", id: "review-note" },
    el("strong", {
      text: r.by ? t("review.sent_back_by", { who: r.by, when: r.at ? relTime(r.at) : "" }) : t("review.sent_back"),
    }),
    el("p", { class: "review-text", text: r.note }),
    el("p", { text: done ? t("review.corrected") : t("review.correct") }),
  );
}

// --- screens ----------------------------------------------------------------

function screenSignIn(message) {
  current = null;
  setTitle(t("signin.title"));
  renderNav();
  const err = el("p", { class: "alert alert-error", id: "signin-error", role: "alert", hidden: !message });
  if (message) err.textContent = message;
  const user = el("input", {
    id: "username",
    name: "username",
    autocomplete: "username",
    autocapitalize: "none",
    spellcheck: "false",
    required: true,
  });
  const pass = el("input", {
    id: "password",
    name: "password",
    type: "password",
    autocomplete: "current-password",
    required: true,
  });
  const submit = el("button", { type: "submit", class: "btn btn-primary btn-block", text: t("signin.submit") });
  const form = el(
    "form",
    { class: "card signin", novalidate: true },
    el("h1", { text: t("signin.title") }),
    el("p", { class: "muted", text: t("signin.intro") }),
    err,
    el("div", { class: "field" }, el("label", { for: "username", text: t("signin.username") }), user),
    el("div", { class: "field" }, el("label", { for: "password", text: t("signin.password") }), pass),
    submit,
  );
  // The language follows the phone's; anyone may pick another here (kept on this phone).
  const language = el("select", { id: "language", name: "language", autocomplete: "off" });
  for (const l of LOCALES) {
    language.append(el("option", { value: l.tag, lang: l.tag, text: l.name, selected: l.tag === locale() }));
  }
  language.addEventListener("change", () => {
    const typed = user.value;
    setLocale(language.value);
    translatePage();
    renderReach();
    screenSignIn();
    $("#username").value = typed;
    $("#language").focus();
  });
  const switcher = el(
    "div",
    { class: "field language" },
    // Labelled in every language: whoever cannot read the current one still finds it.
    el("label", { for: "language" }, t("signin.language"), " ", el("span", { class: "muted", lang: locale() === "en" ? "es" : "en", text: locale() === "en" ? "· Idioma" : "· Language" })),
    language,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!user.value.trim() || !pass.value) {
      err.hidden = false;
      err.textContent = t("signin.missing");
      return;
    }
    submit.disabled = true;
    submit.textContent = t("signin.busy");
    try {
      const s = await api.request("POST", "/api/v1/session", {
        json: { username: user.value.trim(), password: pass.value },
        auth: false,
      });
      await startSession(s);
      location.hash = "#/activities";
      route();
    } catch (e) {
      err.hidden = false;
      err.textContent =
        e.status === 0 ? t("signin.unreachable") : errorText(e);
      submit.disabled = false;
      submit.textContent = t("signin.submit");
    }
  });
  main().replaceChildren(form, switcher);
  user.focus();
}

function badge(b) {
  return el("span", { class: `badge badge-${b.key}` }, el("span", { class: "badge-icon", "aria-hidden": "true", text: b.icon }), b.label);
}

function screenActivities() {
  setTitle(t("nav.activities"));
  const draw = () => {
    const list = el("ul", { class: "activity-list", "aria-label": t("activities.list_label") });
    for (const a of state.activities) {
      const b = badgeOf(a, latestThisRound(a));
      list.append(
        el(
          "li",
          {},
          el(
            "a",
            { class: "activity", href: `#/activity/${encodeURIComponent(a.id)}`, "data-activity": a.id },
            el("span", { class: "activity-title", text: a.title || a.id }),
            el("span", { class: "activity-meta", text: humanize(a.type || "") }),
            badge(b),
            b.detail ? el("span", { class: "activity-detail", text: b.detail }) : null,
          ),
        ),
      );
    }
    const body = [el("h1", { text: t("activities.title") })];
    if (!api.isReachable()) {
      body.push(el("p", { class: "alert alert-warn", id: "kept-note", text: t("activities.kept_note") }));
    }
    if (!state.activities.length) {
      body.push(
        el("p", { class: "empty" }, state.fetchedAt
          ? t("activities.none")
          : t("activities.loading")),
      );
    } else body.push(list);
    if (state.fetchedAt) body.push(el("p", { class: "muted small", text: t("activities.updated", { when: relTime(state.fetchedAt) }) }));
    checkoutEl = checkoutEl || checkoutBox(); // kept across redraws (its message stays)
    body.push(checkoutEl);
    main().replaceChildren(...body);
  };
  current = () => {
    // Do not redraw under the crew's fingers while they type an activity id.
    if (!document.activeElement || document.activeElement.id !== "checkout-id") draw();
  };
  draw();
}

let checkoutEl = null;

/** Take an approved activity offline through the gateway (needs backhaul: rule 2). */
function checkoutBox() {
  const msg = el("p", { id: "checkout-msg", role: "status", hidden: true });
  const input = el("input", { id: "checkout-id", name: "activity_id", autocomplete: "off", autocapitalize: "none", spellcheck: "false", required: true });
  const submit = el("button", { type: "submit", class: "btn btn-secondary", text: t("checkout.submit") });
  const form = el(
    "form",
    { class: "card", id: "checkout", novalidate: true },
    el("h2", { text: t("checkout.title") }),
    el("p", { class: "muted", text: t("checkout.intro") }),
    el("div", { class: "field" }, el("label", { for: "checkout-id", text: t("checkout.id") }), input),
    msg,
    submit,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const id = input.value.trim();
    msg.hidden = false;
    msg.className = "alert alert-info";
    if (!id) {
      msg.textContent = t("checkout.missing");
      return;
    }
    submit.disabled = true;
    msg.textContent = t("checkout.busy");
    try {
      await api.request("POST", `/api/v1/activities/${encodeURIComponent(id)}/checkout`, { timeout: 30000 });
      msg.hidden = true;
      input.value = "";
      toast(t("checkout.done", { id }), "ok");
      await refresh();
    } catch (err) {
      msg.className = "alert alert-error";
      msg.textContent = errorText(err);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function screenActivity(id) {
  let activity = state.activities.find((a) => a.id === id);
  if (!activity) {
    main().replaceChildren(
      el("h1", { text: t("activity.not_found") }),
      el("p", { text: t("activity.not_found_detail") }),
      el("a", { href: "#/activities", class: "btn btn-secondary", text: t("activity.back_to_list") }),
    );
    current = null;
    return;
  }
  setTitle(activity.title);
  let ctl = null;
  let workTimer = null;
  let shownSeq = null;
  let dirty = false;

  let shownReadOnly = null;
  let shownVersion = null; // the form version on screen: what a save names
  let wantedVersion = null;

  /** Read-only once completed (unless refused), applied or canceled. */
  const isReadOnly = (latest) => {
    const b = badgeOf(activity, latest);
    const refused = latest && (latest.state === "rejected" || latest.state === "refused");
    return b.key === "canceled" || b.key === "applied" || (!refused && !!latest && latest.status === "completed");
  };

  const draw = async (force) => {
    activity = state.activities.find((a) => a.id === id) || activity;
    const last = latestOf(activity); // its answers fill the form (also from a past round)
    const latest = latestThisRound(activity);
    const latestSeq = last ? last.seq : 0;
    const readOnly = isReadOnly(latest);
    const wanted = formFor(activity, latest, null).version;
    // While the crew is typing, a background refresh only updates the header;
    // the form is redrawn when a newer save, a refusal/cancelation or another
    // form version arrives.
    const same = latestSeq === shownSeq && readOnly === shownReadOnly && wanted === wantedVersion;
    if (!force && ctl && (dirty || same)) {
      updateHeader(latest);
      return;
    }
    shownSeq = latestSeq;
    shownReadOnly = readOnly;
    wantedVersion = wanted;
    const work = await db.get("work", id);
    if (!state.session || current !== redraw) return; // signed out or moved on meanwhile
    let data = { record: {}, tables: {} };
    const latestBody = last && (last.body || (last.record ? last : null));
    if (latestBody) data = { record: latestBody.record || {}, tables: latestBody.tables || {} };
    const working = !!(work && work.dirty && work.base_seq >= latestSeq);
    if (working) data = work.data;
    dirty = working;
    const shown = formFor(activity, latest, working ? work : null);
    shownVersion = shown.version;

    const formBox = el("div", { class: "form", id: "form" });
    const header = el("div", { class: "activity-head", id: "activity-head" });
    const problems = el("div", { id: "problems", class: "alert alert-error", role: "alert", tabindex: "-1", hidden: true });
    const actions = el("div", { class: "actions" });
    if (!readOnly) {
      actions.append(
        el("button", { type: "button", class: "btn btn-secondary", id: "save-draft", text: t("activity.save_draft"), onclick: () => save("draft") }),
        el("button", { type: "button", class: "btn btn-primary", id: "complete", text: t("activity.complete"), onclick: () => save("completed") }),
      );
    }
    main().replaceChildren(
      el("a", { href: "#/activities", class: "back", text: t("activity.back") }),
      header,
      problems,
      formBox,
      readOnly ? null : actions,
    );
    updateHeader(latest);
    ctl = renderForm(formBox, shown.form, {
      readOnly,
      data,
      blobUrl,
      storeBlob,
      onChange: () => {
        dirty = true;
        clearTimeout(workTimer);
        workTimer = setTimeout(keepWork, 400);
      },
      // The summary follows the answers: a fixed problem leaves it at once.
      onProblems: (list) => {
        const box = $("#problems");
        if (!box || box.hidden || !box.dataset.lead) return;
        if (!list.length) {
          box.hidden = true;
          return;
        }
        showProblemSummary(box, box.dataset.lead, list);
      },
    });
  };

  function updateHeader(latest) {
    const head = $("#activity-head");
    if (!head) return;
    const b = badgeOf(activity, latest);
    const parts = [
      el("h1", { text: activity.title || activity.id }),
      el(
        "p",
        { class: "activity-meta" },
        // The form version on screen: a draft stays on the one it was begun on.
        `${humanize(activity.type || "")} · ${t("activity.version", { version: activity.version ?? "?" })}${shownVersion ? ` · ${t("activity.form_version", { version: shownVersion })}` : ""} `,
        badge(b),
      ),
    ];
    if (b.detail && b.key !== "sent_back") parts.push(el("p", { class: "status-line", text: b.detail }));
    const note = reviewNote(activity, latest);
    if (note) parts.push(note);
    if (latest && (latest.state === "rejected" || latest.state === "refused")) {
      parts.push(
        el(
          "div",
          { class: "alert alert-error", role: "alert", id: "rejection" },
          el("strong", { text: latest.state === "refused" ? t("activity.refused_by_gateway") : t("activity.refused_by_central") }),
          el("p", { text: rejectionReason(latest) }),
          el("p", { text: t("activity.correct_and_save") }),
        ),
      );
    }
    if (b.key === "canceled") {
      parts.push(el("div", { class: "alert alert-warn", role: "status", text: activity.recall_reason ? t("activity.canceled_because", { reason: activity.recall_reason }) : t("activity.canceled") }));
    } else if (latest && latest.status === "completed" && b.key !== "rejected") {
      parts.push(el("p", { class: "alert alert-info", text: t("activity.read_only") }));
    }
    head.replaceChildren(...parts);
  }

  async function keepWork() {
    if (!ctl || !state.session) return;
    await db.put("work", { activity_id: id, data: ctl.snapshot(), dirty: true, base_seq: shownSeq || 0, form_version: shownVersion, at: Date.now() });
  }

  async function save(status) {
    clearTimeout(workTimer); // this save records the form as it stands
    const { record, tables, attachments, problems } = ctl.collect(status === "completed");
    const box = $("#problems");
    if (problems.length) {
      await keepWork();
      box.hidden = false;
      box.className = "alert alert-error";
      const lead = status === "draft" ? t("activity.fix_before_saving") : t("activity.fix_before_completing");
      box.dataset.lead = lead;
      showProblemSummary(box, lead, problems);
      // The summary is an alert (read out); the first field to fix takes the focus.
      if (!ctl.focusFirstProblem()) box.focus();
      return;
    }
    box.hidden = true;
    if (status === "completed") {
      const yes = await ask(
        t("activity.complete_ask"),
        t("activity.complete_ask_detail"),
        t("activity.complete"),
      );
      if (!yes) return;
    }
    const seq = await nextSeq(id);
    const body = {
      envelope_id: uuid4(),
      activity_id: id,
      seq,
      base_version: activity.version ?? 0,
      status,
      created_at: new Date().toISOString(),
      record,
      tables,
      attachments,
    };
    if (shownVersion) body.form_version = shownVersion; // the version it was filled on
    if (!state.session) return; // the session ended meanwhile: the work copy is kept
    const author = state.session.user.username;
    await db.setMeta(`seq:${id}`, seq);
    await db.put("work", { activity_id: id, data: ctl.snapshot(), dirty: false, base_seq: seq, form_version: shownVersion, at: Date.now() });
    await outbox.enqueue(body, author);
    dirty = false;
    state.outbox = await outbox.pending();
    toast(status === "completed" ? t("activity.saved_completed") : t("activity.saved_draft"));
    renderNav();
    await draw(true);
  }

  const redraw = () => draw(false);
  current = redraw;
  draw(true);
}

function showProblemSummary(box, lead, problems) {
  const items = problems.map((p) => p.message);
  const now = [...box.querySelectorAll("li")].map((li) => li.textContent);
  if (now.length === items.length && now.every((m, i) => m === items[i])) return;
  box.replaceChildren(el("strong", { text: lead }), el("ul", {}, ...items.map((m) => el("li", { text: m }))));
}

async function nextSeq(activityId) {
  const seqs = [0, (await db.getMeta(`seq:${activityId}`)) || 0];
  for (const e of envelopesOf(activityId)) seqs.push(e.seq || 0);
  const a = state.activities.find((x) => x.id === activityId);
  if (a && a.latest_envelope) seqs.push(a.latest_envelope.seq || 0);
  if (a && a.next_seq) seqs.push(a.next_seq - 1); // a new round starts after central's last seq
  return Math.max(...seqs) + 1;
}

function screenPending() {
  setTitle(t("nav.pending"));
  const draw = () => {
    const s = state.status || {};
    const title = (id) => (state.activities.find((a) => a.id === id) || {}).title || id;
    const onPhone = state.outbox.filter((r) => r.state === "waiting");
    const refused = state.outbox.filter((r) => r.state === "refused");
    const rejected = state.envelopes.filter((e) => e.state === "rejected");
    const filesRefused = (s.attachments_upload || {}).refused || [];
    const counts = s.envelopes || {};
    const up = backhaulUp(s);

    const phone = el("section", { class: "card", "aria-labelledby": "h-phone" }, el("h2", { id: "h-phone", text: t("pending.on_phone") }));
    phone.append(
      el("p", { class: "big-number", id: "count-phone" }, formatNumber(onPhone.length), el("span", { text: ` ${t("pending.saves_on_phone", { n: onPhone.length })}` })),
    );
    if (onPhone.length) {
      phone.append(
        el("ul", { class: "plain" }, ...onPhone.map((r) =>
          el("li", { text: `${title(r.activity_id)} · ${t("pending.save_n", { n: r.seq })} (${t(`status.${r.body.status}`)})${r.tries ? ` · ${t("pending.tried", { n: r.tries, error: r.error })}` : ""}` }),
        )),
        el("button", { type: "button", class: "btn btn-secondary", text: t("pending.send_now"), onclick: () => outbox.kick(true) }),
      );
    }

    const gw = el("section", { class: "card", "aria-labelledby": "h-gw" }, el("h2", { id: "h-gw", text: t("pending.at_gateway") }));
    gw.append(
      el("p", { class: `backhaul ${up === true ? "up" : up === false ? "down" : ""}`, id: "backhaul" },
        up === true ? t("pending.backhaul_up") : up === false ? t("pending.backhaul_down") : t("pending.backhaul_unknown")),
    );
    if (s.last_sync) gw.append(el("p", { text: t("pending.last_sync", { when: relTime(s.last_sync) }) }));
    else if (state.status) gw.append(el("p", { text: t("pending.never_synced") }));
    if (s.oldest_pending_s != null) gw.append(el("p", { text: t("pending.oldest", { when: relTime(new Date(Date.now() - s.oldest_pending_s * 1000).toISOString()) }) }));
    const dl = el("dl", { class: "counts", id: "counts" });
    for (const key of ENVELOPE_STATES) {
      dl.append(el("div", { "data-state": key }, el("dt", { text: t(`state.${key}`) }), el("dd", { text: formatNumber(counts[key] ?? 0) })));
    }
    gw.append(dl);
    const files = s.attachments_upload || {};
    if (files.to_upload) {
      gw.append(el("p", { id: "files-waiting", text: t("pending.files_waiting", { n: files.to_upload, size: formatBytes(files.to_upload_bytes) }) }));
    }
    gw.append(el("p", { class: "muted small", text: t("pending.counts_scope") }));
    if (state.fetchedAt) gw.append(el("p", { class: "muted small", text: t("common.as_of", { when: relTime(state.fetchedAt) }) }));

    const rej = el("section", { class: "card", "aria-labelledby": "h-rej" }, el("h2", { id: "h-rej", text: t("pending.refused") }));
    if (openRejections().length || refused.length || filesRefused.length) rej.classList.add("card-alert");
    if (!rejected.length && !refused.length && !filesRefused.length) rej.append(el("p", { text: t("pending.nothing_refused") }));
    const items = el("ul", { class: "rejections", id: "rejections" });
    const open = new Set(openRejections().map((e) => e.envelope_id));
    for (const e of [...rejected].sort((a, b) => open.has(b.envelope_id) - open.has(a.envelope_id))) {
      const stillOpen = open.has(e.envelope_id);
      items.append(el("li", { class: stillOpen ? "rejection" : "rejection rejection-done", "data-envelope": e.envelope_id },
        el("strong", { text: `${title(e.activity_id)} · ${t("pending.save_n", { n: e.seq })}` }),
        el("p", { text: `${plainCode(e.code)}: ${rejectionReason(e)}` }),
        stillOpen
          ? el("a", { href: `#/activity/${encodeURIComponent(e.activity_id)}`, text: t("pending.open_and_correct") })
          : el("p", { class: "muted", text: t("pending.corrected") }),
      ));
    }
    for (const f of filesRefused) {
      items.append(el("li", { class: "rejection", "data-file": f.sha256 },
        el("strong", { text: t("pending.a_file") }),
        el("p", { text: t("pending.file_not_sent", { reason: f.reason }) }),
      ));
    }
    for (const r of refused) {
      items.append(el("li", { class: "rejection", "data-envelope": r.envelope_id },
        el("strong", { text: `${title(r.activity_id)} · ${t("pending.save_n", { n: r.seq })}` }),
        el("p", { text: t("pending.gateway_refused", { error: r.error }) }),
        el("button", { type: "button", class: "btn btn-secondary", text: t("pending.dismiss"), onclick: async () => {
          await outbox.discard(r.envelope_id);
        } }),
      ));
    }
    if (items.children.length) rej.append(items);
    // What needs the crew's attention comes first.
    const refusedFirst = openRejections().length || refused.length || filesRefused.length ? [rej, phone, gw] : [phone, gw, rej];
    main().replaceChildren(el("h1", { text: t("nav.pending") }), ...refusedFirst);
  };
  current = draw;
  draw();
}

// --- the site lead's screen -------------------------------------------------------

const SITE_REFRESH_MS = 5000;
let siteTimer = null;
let siteScreen = 0; // which opening of the Site screen the polling belongs to

function isSiteLead() {
  return !!(state.session && state.session.user && state.session.user.site_lead);
}

async function setSiteLead(value) {
  state.session = { ...state.session, user: { ...state.session.user, site_lead: value } };
  await db.setMeta("session", state.session);
  renderNav();
}

/** "ana" or "Ana Souza (ana)". */
function person(username, displayName) {
  return displayName && displayName !== username ? `${displayName} (${username})` : username;
}

function siteLine(text, attrs = {}) {
  return el("p", { class: "site-line", ...attrs, text });
}

/** The whole gateway for its site lead: refreshed every few seconds while open. */
function screenSite() {
  setTitle(t("nav.site"));
  let data = null;
  let fetchedAt = null;
  let problem = null;
  const opened = ++siteScreen;
  clearTimeout(siteTimer);
  const here = () => opened === siteScreen && (location.hash || "").startsWith("#/site");

  const draw = () => {
    if (!here()) return;
    const body = [el("h1", { text: data ? t("site.title", { site: data.gateway.site }) : t("nav.site") })];
    if (problem && problem.code === "not_site_lead") {
      body.push(el("p", { class: "alert alert-warn", id: "site-refused", text: t("error.not_site_lead") }));
      main().replaceChildren(...body);
      return;
    }
    if (problem) body.push(el("p", { class: "alert alert-warn", id: "site-stale", text: data ? t("site.stale", { error: errorText(problem) }) : errorText(problem) }));
    if (!data) {
      if (!problem) body.push(el("p", { class: "muted", text: t("site.loading") }));
      main().replaceChildren(...body);
      return;
    }
    body.push(siteLink(data), siteWork(data), siteRejections(data), siteBox(data));
    body.push(el("p", { class: "muted small", id: "site-as-of", text: `${t("common.as_of", { when: relTime(fetchedAt) })} ${t("site.live")}` }));
    main().replaceChildren(...body);
  };

  const load = async () => {
    if (!here() || !state.session) return;
    if (document.visibilityState === "visible") {
      try {
        data = await api.request("GET", "/api/v1/site");
        fetchedAt = new Date().toISOString();
        problem = null;
      } catch (err) {
        problem = err;
        if (err instanceof api.ApiError && err.code === "not_site_lead") {
          data = null;
          await setSiteLead(false);
        }
      }
      draw();
    }
    if (here() && state.session && !(problem && problem.code === "not_site_lead")) siteTimer = setTimeout(load, SITE_REFRESH_MS);
  };
  current = draw;
  draw();
  load();
}

function siteCard(id, title, alert, ...children) {
  return el(
    "section",
    { class: alert ? "card card-alert" : "card", id, "aria-labelledby": `${id}-h` },
    el("h2", { id: `${id}-h`, text: title }),
    ...children,
  );
}

function siteLink(s) {
  const up = s.backhaul.link === "up";
  const since = s.backhaul.since;
  const forHow = since ? duration((Date.now() - new Date(since).getTime()) / 1000) : null;
  const line = since
    ? t(up ? "site.link_up_since" : "site.link_down_since", { since: formatDateTime(since), for: forHow })
    : t(up ? "site.link_up" : "site.link_down");
  const parts = [el("p", { class: `backhaul ${up ? "up" : "down"}`, id: "site-link-state", text: line })];
  parts.push(siteLine(s.last_sync ? t("site.last_sync", { when: relTime(s.last_sync), at: formatDateTime(s.last_sync) }) : t("site.never_synced"), { id: "site-last-sync" }));
  if (!up && s.backhaul.last_error) parts.push(el("p", { id: "site-link-error", text: t("site.link_error", { error: s.backhaul.last_error }) }));
  return siteCard("site-backhaul", t("site.link"), !up, ...parts);
}

function siteWork(s) {
  const dl = el("dl", { class: "counts", id: "site-counts" });
  for (const key of ENVELOPE_STATES) {
    dl.append(el("div", { "data-state": key }, el("dt", { text: t(`state.${key}`) }), el("dd", { text: formatNumber(s.envelopes[key] ?? 0) })));
  }
  const o = s.oldest_waiting;
  const oldest = o
    ? t("site.oldest", { title: o.activity_title || o.activity_id, seq: o.seq, who: o.author, age: duration(o.age_s) })
    : t("site.nothing_waiting");
  const files = s.files || {};
  const parts = [siteLine(oldest, { id: "site-oldest" }), dl];
  parts.push(siteLine(files.to_upload ? t("site.files_waiting", { n: files.to_upload, size: formatBytes(files.to_upload_bytes) }) : t("site.no_files_waiting"), { id: "site-files" }));
  for (const f of files.refused || []) {
    parts.push(el("p", { class: "rejection", "data-file": f.sha256, text: t("site.file_refused", { sha: f.sha256.slice(0, 12), reason: f.reason }) }));
  }
  // Work waiting for hours with the link up needs a look; with the link down it is expected.
  const stuck = o && s.backhaul.link === "up" && o.age_s > 3600;
  return siteCard("site-work", t("site.work"), stuck || (files.refused || []).length > 0, ...parts);
}

function afterText(r) {
  const a = r.after || {};
  switch (a.what) {
    case "corrected":
      return t("site.after_corrected", { seq: a.seq, state: t(`site.now.${a.state}`) });
    case "canceled":
      return t("site.after_canceled");
    case "checked_in":
      return t("site.after_checked_in");
    default:
      return t("site.after_open", { who: r.author });
  }
}

function siteRejections(s) {
  const parts = [];
  if (!s.rejections_total) parts.push(siteLine(t("site.no_rejections"), { id: "site-no-rejections" }));
  else parts.push(siteLine(t("site.rejections_count", { n: s.rejections_total, open: s.rejections_open }), { id: "site-rejections-count" }));
  const list = el("ul", { class: "rejections", id: "site-rejections" });
  for (const r of s.rejections) {
    const open = (r.after || {}).what === "open";
    list.append(
      el(
        "li",
        { class: open ? "rejection" : "rejection rejection-done", "data-envelope": r.envelope_id },
        el("strong", { text: `${r.activity_title || r.activity_id} · ${t("pending.save_n", { n: r.seq })}` }),
        el("p", { class: "rejection-who", text: t("site.rejected_who", { who: person(r.author, r.author_name), when: r.rejected_at ? formatDateTime(r.rejected_at) : t("time.unknown") }) }),
        el("p", { class: "rejection-code", text: `${plainCode(r.code)} (${r.code || "—"})` }),
        el("p", { class: "rejection-reason", text: rejectionReason(r) }),
        el("p", { class: "rejection-after", text: afterText(r) }),
      ),
    );
  }
  if (s.rejections.length) parts.push(list);
  if (s.rejections_total > s.rejections.length) parts.push(el("p", { class: "muted", text: t("site.more_rejections", { n: s.rejections_total - s.rejections.length }) }));
  return siteCard("site-refused", t("site.rejections"), s.rejections_open > 0, ...parts);
}

function siteBox(s) {
  const disk = s.disk || {};
  const rep = s.replication || {};
  const cert = s.certificate || {};
  const parts = [
    siteLine(t("site.disk_free", { free: formatBytes(disk.free_bytes), db: formatBytes(disk.db_bytes) }), { id: "site-disk" }),
    el("p", {
      class: disk.low ? "alert alert-error" : "",
      id: "site-disk-policy",
      text: disk.low
        ? t("site.disk_low", { floor: formatBytes(disk.floor_bytes) })
        : disk.floor_bytes
          ? t("site.disk_ok", { floor: formatBytes(disk.floor_bytes) })
          : t("site.disk_guard_off"),
    }),
  ];
  let replicaBad = false;
  if (!rep.enabled) parts.push(siteLine(t("site.replica_off"), { id: "site-replica" }));
  else {
    const lag = rep.lag_s;
    replicaBad = !rep.running || !!rep.last_error || (lag != null && lag > 60);
    parts.push(siteLine(
      !rep.running ? t("site.replica_not_running") : lag == null ? t("site.replica_unknown") : t("site.replica_lag", { lag: formatNumber(lag, { maximumFractionDigits: 1 }) }),
      { id: "site-replica" },
    ));
    if (rep.last_error) parts.push(el("p", { id: "site-replica-error", text: t("site.replica_error", { error: rep.last_error, when: rep.last_error_at ? relTime(rep.last_error_at) : t("time.unknown") }) }));
  }
  const certSoon = cert.days_left != null && cert.days_left < 30;
  parts.push(siteLine(
    cert.expires_at
      ? t(cert.days_left < 0 ? "site.cert_expired" : "site.cert_expires", { date: formatDateTime(cert.expires_at), n: Math.max(0, Math.floor(cert.days_left)) })
      : t("site.cert_none"),
    { id: "site-cert" },
  ));
  parts.push(el("p", { class: "muted", id: "site-version", text: t("site.version", { version: s.gateway.version, uptime: duration(s.gateway.uptime_s), n: s.crew_signed_in }) }));
  return siteCard("site-box", t("site.gateway"), !!disk.low || replicaBad || certSoon, ...parts);
}

/** true/false from GET /api/v1/status's backhaul.link, null when not known. */
function backhaulUp(s) {
  const link = s && s.backhaul && s.backhaul.link;
  return link === "up" ? true : link === "down" ? false : null;
}

// --- session -----------------------------------------------------------------

async function startSession(s) {
  db.reopen();
  // "user" outlives an ended session (which clears "session"): it says whose
  // view this phone holds.
  const prev = await db.getMeta("user");
  if (prev && prev !== s.user.username) {
    // Another crew member signed in on this phone: drop the previous one's view
    // (their unsent saves stay in the outbox, sent when they sign in again).
    await db.clear("activities");
    await db.clear("work");
    await db.setMeta("gateway_view", null);
  }
  await db.setMeta("user", s.user.username);
  await db.setMeta("session", s);
  // Ask the browser not to evict the outbox under storage pressure (HTTPS only;
  // over plain HTTP the StorageManager does not exist).
  if (navigator.storage && navigator.storage.persist) navigator.storage.persist().catch(() => {});
  state.session = s;
  api.setToken(s.token);
  outbox.setUser(s.user.username);
  await loadLocal();
  scheduleRefresh();
  outbox.kick();
}

async function signOut() {
  const waiting = (await outbox.pending()).filter((r) => r.state === "waiting").length;
  const text = waiting ? t("signout.ask_waiting", { n: waiting }) : t("signout.ask_detail");
  if (!(await ask(t("signout.ask"), text, t("nav.sign_out"), t("signout.stay"), waiting > 0))) return;
  state.session = null; // from here on nothing writes to the device's storage
  outbox.setUser(null);
  try {
    await api.request("DELETE", "/api/v1/session", { timeout: 4000 });
  } catch {
    // Out of reach: the token expires on the gateway by itself.
  }
  await wipe();
  screenSignIn();
  toast(t("signout.done"));
}

const SIGNED_OUT_KEY = "outpost:signed-out";

/** Remove everything this app kept on the device. */
async function wipe() {
  state.session = null;
  clearTimeout(refreshTimer);
  clearInterval(pingTimer);
  api.setToken(null);
  outbox.setUser(null);
  Object.assign(state, { activities: [], envelopes: [], status: null, outbox: [], fetchedAt: null });
  checkoutEl = null;
  for (const url of blobUrls.values()) URL.revokeObjectURL(url);
  blobUrls.clear();
  await db.destroy();
  try {
    const language = savedChoice(); // a device setting, not the crew member's data: kept
    localStorage.clear();
    if (language) setLocale(language);
    sessionStorage.clear();
    // Tell the app's other tabs (they get a "storage" event), then leave nothing.
    localStorage.setItem(SIGNED_OUT_KEY, String(Date.now()));
    localStorage.removeItem(SIGNED_OUT_KEY);
  } catch {
    // storage disabled
  }
  if ("caches" in window) {
    for (const key of await caches.keys()) await caches.delete(key);
  }
  if ("serviceWorker" in navigator) {
    for (const reg of await navigator.serviceWorker.getRegistrations()) await reg.unregister();
  }
  // Forget the screen too (replaceState: no hashchange to re-route behind our back).
  history.replaceState(null, "", location.pathname + location.search);
}

// --- routing -------------------------------------------------------------------

function route() {
  if (!state.session) {
    screenSignIn();
    return;
  }
  const h = location.hash || "#/activities";
  const m = h.match(/^#\/activity\/(.+)$/);
  if (m) screenActivity(decodeURIComponent(m[1]));
  else if (h.startsWith("#/pending")) screenPending();
  else if (h.startsWith("#/site")) screenSite();
  else screenActivities();
  renderNav();
  main().focus({ preventScroll: true });
  // Opening a screen shows fresh data when the gateway is in reach.
  if (api.isReachable()) refresh();
}

async function boot() {
  translatePage();
  renderReach();
  api.onReachChange(() => {
    renderReach();
    if (api.isReachable()) refresh();
    else if (state.session && current) current();
  });
  api.onSessionLost.addEventListener("lost", () => {
    if (!state.session) return;
    state.session = null;
    clearTimeout(refreshTimer);
    outbox.setUser(null);
    db.setMeta("session", null);
    screenSignIn(t("signin.session_ended"));
  });
  outbox.events.addEventListener("change", async () => {
    if (!state.session) return;
    const before = state.outbox.length;
    state.outbox = await outbox.pending();
    renderNav();
    if (state.outbox.length < before) refresh();
    else if (current) current();
  });
  outbox.events.addEventListener("delivered", (ev) => {
    toast(ev.detail.status === "completed" ? t("toast.delivered_completed") : t("toast.delivered_draft"), "ok");
  });
  window.addEventListener("hashchange", route);
  // A phone unlocked or the tab brought back: show fresh data.
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && state.session && api.isReachable()) refresh();
  });
  window.addEventListener("storage", async (ev) => {
    if (ev.key !== SIGNED_OUT_KEY || ev.newValue === null || !state.session) return;
    state.session = null;
    outbox.setUser(null);
    await wipe();
    screenSignIn(t("signin.signed_out_elsewhere"));
  });
  $("#ask").addEventListener("cancel", () => {
    $("#ask").returnValue = "";
  });

  if (window.isSecureContext && "serviceWorker" in navigator) {
    navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch((err) => {
      console.warn("service worker not registered:", err.message);
    });
  }

  // Only open the database when a session was kept (a fresh phone stays empty).
  const dbs = indexedDB.databases ? await indexedDB.databases() : [{ name: "outpost" }];
  const s = dbs.some((d) => d.name === "outpost") ? await db.getMeta("session") : null;
  if (s && s.token && (!s.expires_at || new Date(s.expires_at) > new Date())) {
    await startSession(s);
  }
  route();
  api.ping();
}

boot().catch((err) => {
  console.error("The app failed to start:", err);
  main().replaceChildren(el("p", { class: "alert alert-error", text: t("app.failed", { error: err.message }) }));
});
