// The service worker: the app shell comes from the cache first (the app opens with no network), and the
// SDK's Background Sync helper flushes the driver's outbox and uploads the proof-of-delivery photos and
// signatures queued offline (tus over fetch) when the network returns, even with the tab closed.
import { registerOutboxSync } from "@syncserver/client/sw";

declare const self: ServiceWorkerGlobalScope;
/** Every file of the build (set by build.mjs), and a hash of their contents: a new build is a new cache. */
declare const __SHELL__: string[];
declare const __VERSION__: string;

const CACHE = `driver-pwa-${__VERSION__}`;
const RUNTIME = "driver-pwa-runtime";

// The page registers /sw.js?server=<sync server>&db=<IndexedDB name>: the outbox and uploads this worker may flush.
const params = new URL(self.location.href).searchParams;
const server = params.get("server");
const dbName = params.get("db");
if (server && dbName) registerOutboxSync(self, { url: server, dbName });

self.addEventListener("install", (event) => {
  event.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE);
      await cache.addAll(__SHELL__);
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      for (const key of await caches.keys()) {
        if (key.startsWith("driver-pwa-") && key !== CACHE && key !== RUNTIME) await caches.delete(key);
      }
      await self.clients.claim();
    })(),
  );
});

async function networkFirst(request: Request): Promise<Response> {
  try {
    const response = await fetch(request);
    if (response.ok) await (await caches.open(RUNTIME)).put(request, response.clone());
    return response;
  } catch (err) {
    const cached = await caches.match(request, { ignoreSearch: true });
    if (cached) return cached;
    throw err;
  }
}

async function shellFirst(request: Request): Promise<Response> {
  const cache = await caches.open(CACHE);
  // Navigations carry query strings (?driver=…); the shell page is the same.
  const cached = await cache.match(request, { ignoreSearch: true });
  return cached ?? fetch(request);
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  // Only this app's own GETs: the sync server's API and the token endpoint always go to the network.
  if (request.method !== "GET" || url.origin !== self.location.origin || url.pathname.startsWith("/dev/")) return;
  if (url.pathname === "/config.json") {
    event.respondWith(networkFirst(request));
    return;
  }
  event.respondWith(shellFirst(request));
});
