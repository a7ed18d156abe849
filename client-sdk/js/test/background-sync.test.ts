/** `requestBackgroundSync()`: Background Sync with the tag the service worker handles, else a page-side `online` retry. */
import { afterEach, describe, expect, it, vi } from "vitest";

import { SyncClient } from "../src/client.js";
import { settle, useFakeClock } from "./fake-clock.js";
import { registerOutboxSync } from "../src/sw.js";
import { FakeServer, freshDb, until } from "./fake-server.js";

afterEach(() => {
  vi.unstubAllGlobals();
  vi.useRealTimers();
});

/** `globalThis` as a page's `window`: `online` events the test dispatches. */
function pageEvents(): EventTarget {
  const events = new EventTarget();
  vi.stubGlobal("addEventListener", events.addEventListener.bind(events));
  vi.stubGlobal("removeEventListener", events.removeEventListener.bind(events));
  return events;
}

async function offlinePage(server: FakeServer, dbName = freshDb()): Promise<SyncClient> {
  const client = await SyncClient.open({ url: "http://sync.test", token: "t0", dbName, fetch: server.fetch, transport: "http" });
  await client.collection("deliveries").set("dlv-1", { status: "delivered" });
  await client.collection("deliveries").inc("dlv-1", "cod_cents", 1250);
  return client;
}

describe("requestBackgroundSync", () => {
  it("registers the tag the service worker's sync handler flushes, where the browser has Background Sync", async () => {
    const register = vi.fn((_tag: string) => Promise.resolve());
    vi.stubGlobal("navigator", { serviceWorker: { ready: Promise.resolve({ sync: { register } }) } });
    vi.stubGlobal("SyncManager", class {});
    const events = pageEvents();
    const server = new FakeServer();
    const dbName = freshDb();
    const page = await offlinePage(server, dbName);

    expect(await page.requestBackgroundSync()).toBe("background-sync");
    expect(register).toHaveBeenCalledTimes(1);
    const tag = register.mock.calls[0]![0];
    expect(tag).toBe("syncclient-outbox");
    events.dispatchEvent(new Event("online"));
    await new Promise((r) => setTimeout(r, 50));
    expect(server.pushes).toHaveLength(0); // no page-side listener: the worker does it
    await page.close(); // the tab is gone

    // The browser fires `sync` with that tag in the worker: it pushes the outbox.
    const listeners: ((e: { tag: string; waitUntil(p: Promise<unknown>): void }) => void)[] = [];
    registerOutboxSync({ addEventListener: (_type, f) => listeners.push(f) }, { url: "http://sync.test", dbName, fetch: server.fetch });
    const work: Promise<unknown>[] = [];
    for (const f of listeners) f({ tag, waitUntil: (p) => work.push(p) });
    expect(work).toHaveLength(1);
    await Promise.all(work);
    expect(server.log.map((c) => c.n)).toEqual([1, 2]);
  });

  it("falls back to an `online` listener that pushes the outbox when the browser has no SyncManager", async () => {
    const register = vi.fn((_tag: string) => Promise.resolve());
    vi.stubGlobal("navigator", { serviceWorker: { ready: Promise.resolve({ sync: { register } }) } });
    expect("SyncManager" in globalThis).toBe(false);
    const events = pageEvents();
    const server = new FakeServer();
    const page = await offlinePage(server);

    expect(await page.requestBackgroundSync()).toBe("online-event");
    expect(register).not.toHaveBeenCalled();
    await new Promise((r) => setTimeout(r, 50));
    expect(server.pushes).toHaveLength(0); // nothing until the network returns

    events.dispatchEvent(new Event("online"));
    await until(async () => (await page.pendingCount()) === 0);
    expect(server.log.map((c) => c.n)).toEqual([1, 2]);
    expect(server.pushes).toHaveLength(1);
    await page.close();
  });

  it("falls back to the `online` listener when registering is refused", async () => {
    const register = vi.fn((_tag: string) => Promise.reject(new DOMException("denied", "NotAllowedError")));
    vi.stubGlobal("navigator", { serviceWorker: { ready: Promise.resolve({ sync: { register } }) } });
    vi.stubGlobal("SyncManager", class {});
    const events = pageEvents();
    const server = new FakeServer();
    const page = await offlinePage(server);

    expect(await page.requestBackgroundSync()).toBe("online-event");
    expect(register).toHaveBeenCalledTimes(1);
    events.dispatchEvent(new Event("online"));
    await until(async () => (await page.pendingCount()) === 0);
    expect(server.log.map((c) => c.n)).toEqual([1, 2]);
    await page.close();
  });

  it("falls back to the `online` listener when no service worker becomes active, instead of waiting forever", async () => {
    // Chrome has SyncManager, but `ready` never settles on a page whose worker failed to register.
    vi.stubGlobal("navigator", { serviceWorker: { ready: new Promise(() => undefined) } });
    vi.stubGlobal("SyncManager", class {});
    const events = pageEvents();
    const server = new FakeServer();
    const page = await offlinePage(server);

    useFakeClock();
    expect(await settle(page.requestBackgroundSync(), 10_000)).toBe("online-event");
    vi.useRealTimers();
    events.dispatchEvent(new Event("online"));
    await until(async () => (await page.pendingCount()) === 0);
    expect(server.log.map((c) => c.n)).toEqual([1, 2]);
    await page.close();
  });
});
