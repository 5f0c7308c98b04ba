// A signature pad: draw with a finger, stylus or mouse (pointer events) on a
// canvas; the result is a PNG blob with a white background.

import { t } from "./i18n.js";

export function signaturePad({ label, onDone, readOnly = false, imageUrl = null }) {
  const wrap = document.createElement("div");
  wrap.className = "sig";
  if (readOnly) {
    if (imageUrl) {
      const img = document.createElement("img");
      img.src = imageUrl;
      img.alt = t("sig.alt", { label });
      img.className = "sig-image";
      wrap.append(img);
    } else {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = t("sig.none");
      wrap.append(p);
    }
    return { element: wrap, canvas: null };
  }

  const canvas = document.createElement("canvas");
  canvas.className = "sig-canvas";
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", t("sig.canvas_label", { label }));
  canvas.tabIndex = 0;
  const hint = document.createElement("p");
  hint.className = "sig-hint";
  hint.textContent = imageUrl ? t("sig.signed") : t("sig.hint");
  const clear = document.createElement("button");
  clear.type = "button";
  clear.className = "btn btn-secondary";
  clear.textContent = t("sig.clear");
  wrap.append(canvas, hint, clear);

  const ctx = canvas.getContext("2d");
  let drawn = false;
  let last = null;
  let saveTimer = null;
  const CSS_HEIGHT = 180;
  let cssWidth = 300; // the drawing's coordinate width, fixed when the pad is sized

  function size() {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(wrap.clientWidth || 300, 200);
    cssWidth = width;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(CSS_HEIGHT * ratio);
    canvas.style.height = `${CSS_HEIGHT}px`;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, width, CSS_HEIGHT);
    ctx.lineWidth = 3;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.strokeStyle = "#000000";
    drawn = false;
  }

  function showImage(url) {
    const img = new Image();
    img.onload = () => ctx.drawImage(img, 0, 0, cssWidth, CSS_HEIGHT);
    img.src = url;
  }

  // A phone turned sideways stretches the canvas: map the finger back onto the drawing.
  function point(ev) {
    const rect = canvas.getBoundingClientRect();
    return {
      x: ((ev.clientX - rect.left) * cssWidth) / (rect.width || cssWidth),
      y: ((ev.clientY - rect.top) * CSS_HEIGHT) / (rect.height || CSS_HEIGHT),
    };
  }

  canvas.addEventListener("pointerdown", (ev) => {
    ev.preventDefault();
    canvas.setPointerCapture(ev.pointerId);
    last = point(ev);
    ctx.beginPath();
    ctx.arc(last.x, last.y, 1.5, 0, Math.PI * 2);
    ctx.fillStyle = "#000000";
    ctx.fill();
    drawn = true;
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (!last) return;
    ev.preventDefault();
    const events = ev.getCoalescedEvents ? ev.getCoalescedEvents() : [ev];
    for (const e of events.length ? events : [ev]) {
      const p = point(e);
      ctx.beginPath();
      ctx.moveTo(last.x, last.y);
      ctx.lineTo(p.x, p.y);
      ctx.stroke();
      last = p;
    }
  });
  const end = () => {
    if (!last) return;
    last = null;
    clearTimeout(saveTimer);
    saveTimer = setTimeout(save, 300);
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  canvas.addEventListener("lostpointercapture", end);

  function save() {
    if (!drawn) return;
    canvas.toBlob((blob) => {
      if (blob) {
        hint.textContent = t("sig.signed");
        onDone(blob);
      }
    }, "image/png");
  }

  clear.addEventListener("click", () => {
    size();
    hint.textContent = t("sig.hint");
    onDone(null);
  });

  // Size once the pad is in the document (its width is known then).
  requestAnimationFrame(() => {
    size();
    if (imageUrl) showImage(imageUrl);
  });
  return { element: wrap, canvas };
}
