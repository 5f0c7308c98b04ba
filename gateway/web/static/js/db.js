// The device's own storage: one IndexedDB database.
//
// Stores:
//   meta       key/value: the session, per-activity sequence counters
//   activities the signed-in user's activities as last fetched (so forms open offline)
//   work       the form as it stands on this phone, per activity (nothing typed is lost)
//   outbox     envelopes not yet acknowledged (201) by the gateway
//   blobs      photos and signatures by SHA-256, kept until sign-out

const NAME = "outpost";
const VERSION = 1;
const STORES = {
  meta: { keyPath: "key" },
  activities: { keyPath: "id" },
  work: { keyPath: "activity_id" },
  outbox: { keyPath: "envelope_id" },
  blobs: { keyPath: "sha256" },
};

let dbPromise = null;
// After sign-out nothing may re-create the database (a delivery or refresh
// still in flight, for instance) until someone signs in again.
let wiped = false;

/** Allow storage again (at sign-in). */
export function reopen() {
  wiped = false;
}

function promisify(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

export function open() {
  if (wiped) return Promise.reject(new Error("signed out: the app keeps nothing on this phone"));
  if (!dbPromise) {
    dbPromise = new Promise((resolve, reject) => {
      const req = indexedDB.open(NAME, VERSION);
      req.onupgradeneeded = () => {
        const db = req.result;
        for (const [name, opts] of Object.entries(STORES)) {
          if (!db.objectStoreNames.contains(name)) db.createObjectStore(name, opts);
        }
      };
      req.onsuccess = () => {
        const db = req.result;
        // Another tab deleting the database (sign-out) must not be blocked by us.
        db.onversionchange = () => {
          db.close();
          dbPromise = null;
        };
        resolve(db);
      };
      req.onerror = () => reject(req.error);
      req.onblocked = () => reject(new Error("The app's storage is busy in another tab."));
    });
    dbPromise.catch(() => {
      dbPromise = null;
    });
  }
  return dbPromise;
}

async function tx(store, mode, fn) {
  const db = await open();
  return new Promise((resolve, reject) => {
    const t = db.transaction(store, mode);
    let result;
    Promise.resolve(fn(t.objectStore(store))).then((r) => {
      result = r;
    }, reject);
    t.oncomplete = () => resolve(result);
    t.onerror = () => reject(t.error);
    t.onabort = () => reject(t.error || new Error("storage transaction aborted"));
  });
}

export function get(store, key) {
  return tx(store, "readonly", (s) => promisify(s.get(key)));
}

export function getAll(store) {
  return tx(store, "readonly", (s) => promisify(s.getAll()));
}

export function put(store, value) {
  return tx(store, "readwrite", (s) => promisify(s.put(value)));
}

export function del(store, key) {
  return tx(store, "readwrite", (s) => promisify(s.delete(key)));
}

export function clear(store) {
  return tx(store, "readwrite", (s) => promisify(s.clear()));
}

/** Write several records to several stores in one transaction (all or nothing). */
export async function putMany(entries) {
  if (!entries.length) return;
  const names = [...new Set(entries.map(([store]) => store))];
  const db = await open();
  return new Promise((resolve, reject) => {
    const t = db.transaction(names, "readwrite");
    for (const [store, value] of entries) t.objectStore(store).put(value);
    t.oncomplete = () => resolve();
    t.onerror = () => reject(t.error);
    t.onabort = () => reject(t.error || new Error("storage transaction aborted"));
  });
}

export async function getMeta(key) {
  const row = await get("meta", key);
  return row ? row.value : undefined;
}

export function setMeta(key, value) {
  return put("meta", { key, value });
}

/** Delete the whole database (sign-out). */
export async function destroy() {
  wiped = true;
  if (dbPromise) {
    try {
      (await dbPromise).close();
    } catch {
      // it never opened; nothing to close
    }
    dbPromise = null;
  }
  await new Promise((resolve, reject) => {
    const req = indexedDB.deleteDatabase(NAME);
    req.onsuccess = () => resolve();
    req.onerror = () => reject(req.error);
    req.onblocked = () => resolve(); // finishes once other tabs close theirs
  });
}
