// Plain words for states, codes and times, so a crew member never has to
// decode a machine state. The sentences themselves live in locales/*.js.

import { t } from "./i18n.js";

export { relTime } from "./i18n.js";

// Refusal codes (central's and the gateway's) → the plain sentence's key.
const CODES = {
  validation: "code.invalid",
  invalid: "code.invalid",
  invalid_envelope: "code.invalid",
  form_invalid: "code.invalid",
  permission: "code.permission",
  forbidden: "code.permission",
  not_responsible: "code.permission",
  conflict: "code.conflict",
  version_conflict: "code.conflict",
  stale: "code.conflict",
  not_checked_out: "code.not_checked_out",
  checked_in: "code.checked_in",
  canceled: "code.canceled",
  recalled: "code.canceled",
  missing_attachment: "code.missing_attachment",
  attachment_missing: "code.missing_attachment",
  form_version: "code.form_version",
  blob_missing: "code.blob_missing",
};

export function plainCode(code) {
  if (!code) return t("code.none");
  const key = CODES[code];
  return key ? t(key) : t("code.other", { code: code.replace(/_/g, " ") });
}

export function rejectionReason(e) {
  const reason = e.reason || e.error || e.message;
  return reason ? String(reason) : t("code.no_reason");
}

const badge = (key, icon, detail) => ({ key, label: t(`badge.${key}`), icon, detail: detail ? t(detail) : null });

/** The badge for an activity given its latest envelope (gateway's or this phone's). */
export function badgeFor(activity, latest) {
  const st = activity.state || activity.status;
  if (st === "recalled" || st === "canceled") return badge("canceled", "✕", "badge.detail.canceled");
  if (!latest) {
    if (st === "checked_in") return badge("applied", "✓", "badge.detail.checked_in");
    return badge("new", "○", null);
  }
  const completed = latest.status === "completed";
  switch (latest.state) {
    case "on_phone":
      return badge("syncing", "↻", "badge.detail.on_phone");
    case "refused":
      return badge("rejected", "!", "badge.detail.refused");
    case "rejected":
      return badge("rejected", "!", "badge.detail.rejected");
    case "applied":
      return badge("applied", "✓", completed ? "badge.detail.applied_done" : "badge.detail.applied_draft");
    case "sent":
      return badge("syncing", "↻", "badge.detail.sent");
    case "queued":
      return completed
        ? badge("completed", "✓", "badge.detail.queued")
        : badge("draft", "✎", "badge.detail.queued");
    default:
      return completed ? badge("completed", "✓", "badge.detail.stored_completed") : badge("draft", "✎", "badge.detail.stored_draft");
  }
}
