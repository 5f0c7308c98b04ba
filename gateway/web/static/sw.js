// Outpost service worker: keeps the app shell so the app opens with no
// gateway in reach. Registered only in a secure context (HTTPS with a
// certificate the phone trusts); API calls always go to the network.
// The gateway fills in BUILD with a hash of the app's files, so any change
// to them installs a new worker and a fresh cache.

const BUILD = "__BUILD__";
const CACHE = `outpost-shell-${BUILD}`;
const SHELL = __SHELL__;

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(SHELL))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith("outpost-shell-") && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

function isShell(url) {
  return url.origin === self.location.origin && !url.pathname.startsWith("/api/") && url.pathname !== "/healthz" && url.pathname !== "/metrics";
}

// Network first (a fresh app when the gateway is there), the cache when not.
self.addEventListener("fetch", (event) => {
  const req = event.request;
  if (req.method !== "GET") return;
  const url = new URL(req.url);
  if (!isShell(url)) return;
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      try {
        // The gateway answers with Cache-Control: no-cache, so this revalidates.
        const resp = await fetch(req);
        if (resp.ok) cache.put(req.mode === "navigate" ? "/" : req, resp.clone());
        return resp;
      } catch (err) {
        const hit = (await cache.match(req, { ignoreSearch: true })) || (req.mode === "navigate" ? await cache.match("/") : undefined);
        if (hit) return hit;
        throw err;
      }
    })(),
  );
});
