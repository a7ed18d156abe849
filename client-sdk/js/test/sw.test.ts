/** The service worker helper: a Background Sync event pushes the outbox and uploads queued files with the token the page stored. */
import { describe, expect, it } from "vitest";

import { SyncClient } from "../src/client.js";
import { BACKGROUND_SYNC_TAG, registerOutboxSync } from "../src/sw.js";
import { FakeServer, freshDb, until } from "./fake-server.js";
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
