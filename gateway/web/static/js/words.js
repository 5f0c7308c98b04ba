// Plain words for states, codes and times, so a crew member never has to
// decode a machine state.

const CODES = {
  validation: "Some answers do not fit the form",
  invalid: "Some answers do not fit the form",
  invalid_envelope: "Some answers do not fit the form",
  form_invalid: "Some answers do not fit the form",
  permission: "You may not change this activity",
  forbidden: "You may not change this activity",
  not_responsible: "You may not change this activity",
  conflict: "Someone else changed this activity first",
  version_conflict: "Someone else changed this activity first",
  stale: "Someone else changed this activity first",
  not_checked_out: "This activity is no longer checked out to this site",
  checked_in: "This activity was already finished",
  canceled: "Central canceled this activity",
  recalled: "Central canceled this activity",
  missing_attachment: "A photo or signature did not arrive",
  attachment_missing: "A photo or signature did not arrive",
  form_version: "The form changed on central",
  blob_missing: "A photo or signature is no longer on this phone",
};

export function plainCode(code) {
  if (!code) return "Refused";
  return CODES[code] || `Refused (${code.replace(/_/g, " ")})`;
}

export function rejectionReason(e) {
  const reason = e.reason || e.error || e.message;
  return reason ? String(reason) : "No reason was given.";
}

/** The badge for an activity given its latest envelope (gateway's or this phone's). */
export function badgeFor(activity, latest) {
  const st = activity.state || activity.status;
  if (st === "recalled" || st === "canceled") {
    return { key: "canceled", label: "Canceled", icon: "✕", detail: "Central took this activity back." };
  }
  if (!latest) {
    if (st === "checked_in") return { key: "applied", label: "Applied", icon: "✓", detail: "Central has it; it is back online." };
    return { key: "new", label: "Not started", icon: "○", detail: null };
  }
  const completed = latest.status === "completed";
  switch (latest.state) {
    case "on_phone":
      return {
        key: "syncing",
        label: "Syncing",
        icon: "↻",
        detail: "Saved on this phone; goes to the gateway when it is in reach.",
      };
    case "refused":
      return { key: "rejected", label: "Rejected", icon: "!", detail: "The gateway refused the last save." };
    case "rejected":
      return { key: "rejected", label: "Rejected", icon: "!", detail: "Central refused the last save." };
    case "applied":
      return {
        key: "applied",
        label: "Applied",
        icon: "✓",
        detail: completed ? "Central applied it; the activity is done." : "Central applied this draft.",
      };
    case "sent":
      return { key: "syncing", label: "Syncing", icon: "↻", detail: "On its way to central." };
    case "queued":
      return completed
        ? { key: "completed", label: "Completed", icon: "✓", detail: "On the gateway, waiting for backhaul." }
        : { key: "draft", label: "Draft", icon: "✎", detail: "On the gateway, waiting for backhaul." };
    default:
      return completed
        ? { key: "completed", label: "Completed", icon: "✓", detail: "Safe on the gateway." }
        : { key: "draft", label: "Draft", icon: "✎", detail: "Draft safe on the gateway." };
  }
}

export function relTime(iso) {
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) return "at an unknown time";
  const s = Math.round((Date.now() - t) / 1000);
  if (s < 10 && s > -10) return "just now";
  if (s < 0) return new Date(t).toLocaleString();
  if (s < 90) return `${s} seconds ago`;
  if (s < 5400) return `${Math.round(s / 60)} minutes ago`;
  if (s < 129600) return `${Math.round(s / 3600)} hours ago`;
  return `${Math.round(s / 86400)} days ago`;
}
