/**
 * Service worker helper: flush the outbox when the network returns, even with every
 * page of the app closed (Background Sync, where the browser has it).
 *
 * ```js
 * // sw.js
 * import { registerOutboxSync } from "@syncserver/client/sw";
 * registerOutboxSync(self, { url: "https://sync.example.com" });
 * ```
 * The page calls `client.requestBackgroundSync()` after queueing writes while offline.
 * The worker pushes over HTTP with the last token the page stored in IndexedDB, under
 * the same round lock as the tabs, so a change is never pushed twice. It only pushes:
 * pulling is the page's job when it opens (a push that finds the server restored from a
 * backup drops the cursor, as a page's round does, so the page's next pull starts from scratch). It then uploads attached files
 * (`flushUploads`) with tus-js-client over `fetch` (a worker has no XMLHttpRequest),
 * under the uploads lock the tabs use, resuming each from its kept upload URL.
 */
import { Attachments } from "./attachments.js";
import { FetchHttpStack } from "./attachments-http.js";
import { BACKGROUND_SYNC_TAG } from "./client.js";
import { emptyStats, RoundTrip, type SyncStats } from "./roundtrip.js";
import { LocalStore } from "./store.js";
import { defaultLocks, TabChannel, type LockManagerLike } from "./tabs.js";
import { TokenSource } from "./token.js";
import { HttpTransport } from "./transport/http.js";

export { BACKGROUND_SYNC_TAG };

interface SyncEventLike {
  readonly tag: string;
  waitUntil(promise: Promise<unknown>): void;
}

/** The part of `ServiceWorkerGlobalScope` the helper uses. */
export interface ServiceWorkerScopeLike {
  addEventListener(type: "sync", listener: (event: SyncEventLike) => void): void;
}

export interface OutboxSyncOptions {
  url: string;
  /** IndexedDB database name, default "syncclient" (the page's `dbName`) */
  dbName?: string;
  fetch?: typeof fetch;
  locks?: LockManagerLike;
}

/** Push the outbox once over HTTP; resolves with what the server settled. Throws to have the browser retry later. */
export async function flushOutbox(options: OutboxSyncOptions): Promise<SyncStats> {
  const dbName = options.dbName ?? "syncclient";
  const store = await LocalStore.open(dbName);
  const tabs = new TabChannel(dbName, () => undefined);
  try {
    const token = await store.meta<string>("token");
    if (!token) throw new Error("no token stored yet: the page has not run");
    const http = new HttpTransport(options.url, new TokenSource(token), options.fetch);
    const stats = emptyStats();
    const roundtrip = new RoundTrip(store, (event) => tabs.post({ kind: "event", event }));
    const locks = options.locks ?? defaultLocks();
    // A server found behind (restored from a backup) is settled here as in a page's round: the cursor goes,
    // so the page's next pull starts from scratch instead of past the server's log.
    await locks.request(`syncclient-round:${dbName}`, {}, () => roundtrip.pushAndSettle(http, stats));
    tabs.post({ kind: "event", event: { type: "outbox", pending: await store.pendingCount() } });
    return stats;
  } finally {
    tabs.close();
    store.close();
  }
}

/**
 * Upload every queued attachment once (tus over `fetch`); resolves with their end states. Throws to have
 * the browser retry later if any could not be sent for a transient reason (a refused file is final).
 */
export async function flushUploads(options: OutboxSyncOptions): Promise<{ id: string; state: string }[]> {
  const dbName = options.dbName ?? "syncclient";
  const store = await LocalStore.open(dbName);
  const tabs = new TabChannel(dbName, () => undefined);
  try {
    const token = await store.meta<string>("token");
    if (!token) throw new Error("no token stored yet: the page has not run");
    const fetchImpl = options.fetch ?? ((input: RequestInfo | URL, init?: RequestInit) => fetch(input, init));
    const attachments = new Attachments(store, {
      url: options.url,
      dbName,
      tokens: new TokenSource(token),
      locks: options.locks ?? defaultLocks(),
      emit: (event) => tabs.post({ kind: "event", event }),
      write: () => Promise.reject(new Error("the service worker does not attach files")),
      fetch: fetchImpl,
      httpStack: new FetchHttpStack(fetchImpl),
    });
    return (await attachments.uploadPending()).map(({ id, state }) => ({ id, state }));
  } finally {
    tabs.close();
    store.close();
  }
}

/** Wire the `sync` event (tag "syncclient-outbox") to `flushOutbox`, then `flushUploads`. */
export function registerOutboxSync(scope: ServiceWorkerScopeLike, options: OutboxSyncOptions): void {
  scope.addEventListener("sync", (event) => {
    if (event.tag !== BACKGROUND_SYNC_TAG) return;
    // Both run even if one fails (the bytes do not wait for the changes); either failure asks for a retry.
    const outbox = flushOutbox(options);
    const uploads = flushUploads(options);
    event.waitUntil(Promise.all([outbox, uploads]));
  });
}
