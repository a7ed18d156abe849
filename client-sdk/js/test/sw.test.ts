/** The service worker helper: a Background Sync event pushes the outbox and uploads queued files with the token the page stored. */
import { describe, expect, it } from "vitest";

import { SyncClient } from "../src/client.js";
import type { SyncEvent } from "../src/events.js";
import { emptyStats, RoundTrip } from "../src/roundtrip.js";
import { LocalStore } from "../src/store.js";
import { BACKGROUND_SYNC_TAG, flushOutbox, registerOutboxSync } from "../src/sw.js";
import { TokenSource } from "../src/token.js";
import { HttpTransport } from "../src/transport/http.js";
import { FakeServer, freshDb, json, until } from "./fake-server.js";
import { FakeTus } from "./fake-tus.js";

describe("registerOutboxSync", () => {
  it("pushes the outbox on the sync event, once, with the page's last token", async () => {
    const server = new FakeServer();
    const dbName = freshDb();
    const page = await SyncClient.open({ url: "http://sync.test", token: "first", dbName, fetch: server.fetch });
    await page.setToken("second");
    await page.collection("deliveries").set("dlv-1", { status: "delivered" });
    await page.collection("deliveries").inc("dlv-1", "cod_cents", 5);
    await page.close(); // the tab is gone

    const listeners: ((e: { tag: string; waitUntil(p: Promise<unknown>): void }) => void)[] = [];
    registerOutboxSync({ addEventListener: (_type, f) => listeners.push(f) }, { url: "http://sync.test", dbName, fetch: server.fetch });
    const work: Promise<unknown>[] = [];
    for (const tag of ["other-tag", BACKGROUND_SYNC_TAG]) for (const f of listeners) f({ tag, waitUntil: (p) => work.push(p) });
    expect(work).toHaveLength(1);
    await Promise.all(work);
    expect(server.log.map((c) => c.n)).toEqual([1, 2]);
    expect(server.tokens).toEqual(["second"]);

    const reopened = await SyncClient.open({ url: "http://sync.test", token: "third", dbName, fetch: server.fetch });
    expect(await reopened.pendingCount()).toBe(0);
    await reopened.sync();
    expect(server.log).toHaveLength(2); // not pushed again
    await reopened.close();
  });
});

describe("the token the service worker uses", () => {
  it("is the last one the page's token function returned", async () => {
    const server = new FakeServer();
    const dbName = freshDb();
    let calls = 0;
    const page = await SyncClient.open({ url: "http://sync.test", token: () => `fn-${++calls}`, dbName, fetch: server.fetch });
    await page.sync();
    const { LocalStore } = await import("../src/store.js");
    const store = await LocalStore.open(dbName);
    await until(async () => (await store.meta<string>("token")) === "fn-1");
    store.close();
    await page.close();
  });
});

describe("flushUploads", () => {
  it("uploads the files queued in the page with tus over fetch, and the page sees them uploaded", async () => {
    const server = new FakeTus();
    const dbName = freshDb();
    const page = await SyncClient.open({ url: "http://sync.test", token: "t0", dbName, fetch: server.fetch });
    const data = new Uint8Array(3000).map((_, i) => i % 256);
    const ref = await page.attachments.attach("deliveries", "dlv-1", "pod_photo", new Blob([data]), { mediaType: "image/jpeg" });
    await page.close(); // the tab is gone

    const listeners: ((e: { tag: string; waitUntil(p: Promise<unknown>): void }) => void)[] = [];
    registerOutboxSync({ addEventListener: (_type, f) => listeners.push(f) }, { url: "http://sync.test", dbName, fetch: server.fetch });
    const work: Promise<unknown>[] = [];
    for (const f of listeners) f({ tag: BACKGROUND_SYNC_TAG, waitUntil: (p) => work.push(p) });
    await Promise.all(work);
    expect(server.uploads.get(ref.id)?.bytes).toEqual(data);
    expect(server.api.log.map((c) => c.ops[0])).toEqual([{ op: "set", field: "pod_photo", value: { $attachment: ref } }]);

    const reopened = await SyncClient.open({ url: "http://sync.test", token: "t0", dbName, fetch: server.fetch });
    expect(await reopened.attachments.status(ref.id)).toMatchObject({ state: "uploaded", sent: 3000 });
    await reopened.close();
  });
});

describe("a server restored from a backup", () => {
  /** A page that pushed change 1 and pulled past it; then the server loses it and change 2 is queued offline. */
  async function restored() {
    const server = new FakeServer();
    const dbName = freshDb();
    const page = await SyncClient.open({ url: "http://sync.test", token: "t0", dbName, fetch: server.fetch, transport: "http" });
    await page.collection("deliveries").set("dlv-1", { status: "out_for_delivery" });
    server.pages = [{ changes: [], cursor: "c-after-seq-1", more: false }];
    await page.sync();
    server.hwm.clear();
    server.ids.clear();
    server.log.length = 0;
    await page.collection("deliveries").set("dlv-1", { status: "delivered" }); // n = 2, the server expects 1
    const events: SyncEvent[] = [];
    page.subscribe((e) => events.push(e));
    return { server, dbName, page, events };
  }

  it("found by the service worker's flush: the cursor goes, and the page's next round pulls from scratch", async () => {
    const { server, dbName, page, events } = await restored();
    const stats = await flushOutbox({ url: "http://sync.test", dbName, fetch: server.fetch });
    expect(stats).toMatchObject({ renumbered: 1, resets: 1, pushed: 1 });
    expect(server.log.map((c) => c.n)).toEqual([1]);
    const store = await LocalStore.open(dbName);
    expect(await store.cursor()).toBeNull();
    expect(await store.serverBehind()).toBe(false);
    store.close();
    await until(() => events.some((e) => e.type === "reset")); // the page hears it over the BroadcastChannel
    const pullsBefore = server.pulls.length;
    await page.sync();
    expect(server.pulls.slice(pullsBefore).map((p) => p.cursor)).toEqual([null]);
    await page.close();
  });

  it("found by a push that then fails: the verdict was kept with the renumbering, and the cursor goes all the same", async () => {
    const { server, dbName, page, events } = await restored();
    let pushes = 0;
    server.intercept = (path) => (path === "/v1/sync/push" && ++pushes === 2 ? json({ error: { code: "unavailable", message: "" } }, 503) : undefined);
    await expect(page.sync()).rejects.toMatchObject({ status: 503 }); // out_of_order, renumbered, then the resend fails
    const store = await LocalStore.open(dbName);
    expect(await store.cursor()).toBeNull();
    store.close();
    expect(events.some((e) => e.type === "reset")).toBe(true);
    const pullsBefore = server.pulls.length;
    expect(await page.sync()).toMatchObject({ pushed: 1, resets: 0 });
    expect(server.pulls.slice(pullsBefore).map((p) => p.cursor)).toEqual([null]);
    await page.close();
  });

  it("found by a push whose round never got to settle it (a crash): the next round, in any realm, drops the cursor", async () => {
    const { server, dbName, page } = await restored();
    await page.close();
    // Another realm pushes and dies before its reset: only the stored verdict is left.
    const store = await LocalStore.open(dbName);
    const http = new HttpTransport("http://sync.test", new TokenSource("t0"), server.fetch);
    expect(await new RoundTrip(store, () => undefined).push(http, emptyStats())).toBe(true);
    expect(await store.serverBehind()).toBe(true);
    expect(await store.cursor()).toBe("c-after-seq-1");
    store.close();
    const reopened = await SyncClient.open({ url: "http://sync.test", token: "t0", dbName, fetch: server.fetch, transport: "http" });
    const pullsBefore = server.pulls.length;
    expect(await reopened.sync()).toMatchObject({ resets: 1, pushed: 0 });
    expect(server.pulls.slice(pullsBefore).map((p) => p.cursor)).toEqual([null]);
    await reopened.close();
  });
});
