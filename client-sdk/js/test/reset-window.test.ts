/**
 * A reset keeps the synced state until the pull from the start has brought the server's back; evictions are told
 * (as the Python SDK's tests/sdk/test_reset_window.py).
 *
 * The device may lose the network between the `reset` answer and the end of the pull from `cursor: null`:
 * meanwhile it must still show what it had and write with the version vectors it had seen (PROTOCOL §2
 * context), or a `remove` removes nothing on the server and a `set` makes a false conflict.
 */
import { openDB } from "idb";
import { describe, expect, it } from "vitest";

import { SyncClient } from "../src/client.js";
import type { SyncEvent } from "../src/events.js";
import { LocalStore } from "../src/store.js";
import type { EntityView, PullResponse } from "../src/types.js";
import { FakeServer, freshDb } from "./fake-server.js";

async function open(server: FakeServer, dbName: string) {
  const client = await SyncClient.open({ url: "http://sync.test/", token: "t0", dbName, fetch: server.fetch, transport: "http" });
  const events: SyncEvent[] = [];
  client.subscribe((e) => events.push(e));
  return { client, events, d: client.collection("deliveries") };
}

function entity(id: string, vv: Record<string, number>, fields: Record<string, EntityView["fields"][string]["value"]>, seq = 1): EntityView {
  const views = Object.fromEntries(
    Object.entries(fields).map(([k, value]) => [k, Array.isArray(value) ? { kind: "set" as const, value } : { kind: "register" as const, value }]),
  );
  return { collection: "deliveries", entity: id, seq, vv, deleted: false, fields: views };
}

function tombstone(id: string, vv: Record<string, number>, seq = 1): EntityView {
  return { collection: "deliveries", entity: id, seq, vv, deleted: true, fields: {} };
}

const RESET: Partial<PullResponse> = { changes: [], cursor: null, reset: true };

/** The network drops for pulls that `drop` picks. */
function cutPulls(server: FakeServer, drop: (cursor: string | null) => boolean): void {
  server.intercept = (path, body) => {
    if (path === "/v1/sync/pull" && drop((body as { cursor: string | null }).cursor)) throw new TypeError("in a tunnel");
    return undefined;
  };
}

const deletions = (events: SyncEvent[]) =>
  events.filter((e) => e.type === "remote_change" && e.deleted).map((e) => (e.type === "remote_change" ? e.entity : ""));

describe("the reset window", () => {
  it("a device offline right after a reset answer keeps its state, and its writes keep the context it saw", async () => {
    const server = new FakeServer();
    const { client, events, d } = await open(server, freshDb());
    const seen = entity("dlv-1", { "web-1": 2 }, { status: "out_for_delivery", address: "1 Main St", scanned: ["parcel-1", "parcel-2"] }, 2);
    server.pages = [{ changes: [seen], cursor: "c2" }];
    await client.sync();

    server.pages = [RESET];
    cutPulls(server, (cursor) => cursor === null); // the reset answer arrives, then the network goes
    await expect(client.sync()).rejects.toThrow(/in a tunnel/);
    expect(events.some((e) => e.type === "reset")).toBe(true);

    // Offline: still there, and local writes carry the version vector the driver saw.
    expect(await d.get("dlv-1")).toEqual({ status: "out_for_delivery", address: "1 Main St", scanned: ["parcel-1", "parcel-2"] });
    expect((await d.list()).map((r) => r.entity)).toEqual(["dlv-1"]);
    await d.remove("dlv-1", "scanned", "parcel-1");
    await d.set("dlv-1", { address: "2 Side St" });
    const contexts = (await client.store.outbox("deliveries", "dlv-1")).map((r) => r.change.context);
    expect(contexts).toEqual([{ "web-1": 2 }, { "web-1": 2 }]);
    expect(await d.get("dlv-1")).toMatchObject({ scanned: ["parcel-2"], address: "2 Side St" });
    expect(deletions(events)).toEqual([]);

    // Back online: the changes go out with that context (the server's remove and set apply to what the
    // driver saw), and the pull from the start brings the entity back with them: nothing dropped.
    server.intercept = null;
    const me = client.replicaId;
    server.pages = [
      { changes: [entity("dlv-1", { "web-1": 2, [me]: 2 }, { status: "out_for_delivery", address: "2 Side St", scanned: ["parcel-2"] }, 4)], cursor: "c4" },
    ];
    const stats = await client.sync();
    expect(stats).toMatchObject({ pushed: 2, resets: 0, dropped: 0 });
    expect(server.pulls.at(-1)?.cursor).toBeNull();
    expect(server.log.map((c) => c.context)).toEqual([{ "web-1": 2 }, { "web-1": 2 }]);
    expect(deletions(events)).toEqual([]);
    expect(await d.get("dlv-1")).toEqual({ status: "out_for_delivery", address: "2 Side St", scanned: ["parcel-2"] });
    expect(await client.pendingCount()).toBe(0);
    await client.close();
  });

  it("an interrupted reset resumes after a reload and then drops, with events, what the server no longer has", async () => {
    const server = new FakeServer();
    const dbName = freshDb();
    let s = await open(server, dbName);
    const v = (i: number, status = "pending") => entity(`dlv-${i}`, { "web-1": i + 1 }, { status }, i + 1);
    server.pages = [{ changes: [0, 1, 2, 3].map((i) => v(i)).concat([tombstone("dlv-4", { "web-1": 5 }, 5)]), cursor: "c5" }];
    await s.client.sync();
    expect((await s.d.list()).map((r) => r.entity)).toEqual(["dlv-0", "dlv-1", "dlv-2", "dlv-3"]);

    // dlv-3 and dlv-4 (a tombstone the server has collected) are gone: a device learns it only through the reset.
    s.events.length = 0;
    server.pages = [RESET, { changes: [entity("dlv-0", { "web-1": 9 }, { status: "delivered" }, 9), v(1)], cursor: "r1", more: true }];
    cutPulls(server, (cursor) => cursor === "r1"); // one page of the pull from the start, then the network goes
    await expect(s.client.sync()).rejects.toThrow(/in a tunnel/);
    const store = await LocalStore.open(dbName);
    expect(await store.cursor()).toBe("r1"); // stored mid-pull, with the page
    store.close();
    expect(await s.d.list()).toEqual([
      { entity: "dlv-0", fields: { status: "delivered" } },
      ...[1, 2, 3].map((i) => ({ entity: `dlv-${i}`, fields: { status: "pending" } })),
    ]); // nothing dropped yet
    expect(s.events.filter((e) => e.type === "remote_change").map((e) => (e.type === "remote_change" ? e.entity : ""))).toEqual(["dlv-0"]);
    const firstEvents = s.events;

    // The app reloads: the reset is resumed from the stored cursor, not restarted.
    await s.client.close();
    server.intercept = null;
    s = await open(server, dbName);
    const pullsBefore = server.pulls.length;
    server.pages = [{ changes: [v(2)], cursor: "r2", more: false }];
    const stats = await s.client.sync();
    expect(stats.resets).toBe(0);
    expect(server.pulls.slice(pullsBefore).map((p) => p.cursor)).toEqual(["r1"]);
    expect(await s.d.list()).toEqual([
      { entity: "dlv-0", fields: { status: "delivered" } },
      { entity: "dlv-1", fields: { status: "pending" } },
      { entity: "dlv-2", fields: { status: "pending" } },
    ]);
    expect(await s.d.view("dlv-3")).toBeUndefined();
    expect([...(await s.client.views("deliveries")).keys()]).toEqual(["dlv-0", "dlv-1", "dlv-2"]);
    // Only dlv-3 was shown: the tombstone leaves silently, and nothing was told before the end.
    expect(deletions(firstEvents)).toEqual([]);
    expect(s.events.filter((e) => e.type === "remote_change")).toEqual([
      { type: "remote_change", collection: "deliveries", entity: "dlv-3", fields: [], deleted: true },
    ]);
    // The next round is an ordinary one.
    server.pages = [{ changes: [], cursor: "r3" }];
    await s.client.sync();
    expect(await s.d.list()).toHaveLength(3);
    await s.client.close();
  });

  it("drops the rows the pull did not bring back in bounded batches, and what was named unavailable with them", async () => {
    const store = await LocalStore.open(freshDb(), "phone-a");
    const views = Array.from({ length: 7 }, (_, i) => entity(`dlv-${i}`, { "web-1": i + 1 }, { status: "pending" }, i + 1));
    await store.applyPage([...views, tombstone("dlv-7", { "web-1": 8 }, 8)], [], "c8", [
      { collection: "deliveries", entity: "dlv-5", seq: 6, code: "data_integrity" },
      { collection: "deliveries", entity: "dlv-6", seq: 7, code: "data_integrity" },
    ]);
    await store.reset();
    expect(await store.cursor()).toBeNull();
    expect(await store.views("deliveries")).toHaveLength(8);
    expect((await store.unavailable()).map((u) => u.entity)).toEqual(["dlv-5", "dlv-6"]); // kept until the pull ends

    // The pull from the start: dlv-0 unchanged (no event), dlv-1 changed (an event), dlv-6 still unavailable.
    const changed = entity("dlv-1", { "web-1": 2, "web-2": 1 }, { status: "failed" }, 9);
    const events = await store.applyPage([views[0] as EntityView, changed], [], "r1", [
      { collection: "deliveries", entity: "dlv-6", seq: 7, code: "data_integrity" },
    ]);
    expect(events).toEqual([{ type: "remote_change", collection: "deliveries", entity: "dlv-1", fields: ["status"], deleted: false }]);
    expect(await store.view("deliveries", "dlv-0")).toEqual(views[0]); // as pulled: no bookkeeping shows

    const dropped: SyncEvent[] = [];
    const batches: number[] = [];
    for (;;) {
      const batch = await store.dropStale(2);
      dropped.push(...batch.events);
      batches.push(batch.dropped);
      if (batch.done) break;
      expect(await store.unavailable()).toHaveLength(2); // the set is settled with the last batch
    }
    expect(batches).toEqual([2, 2, 1]); // dlv-2..dlv-5 and the tombstone dlv-7
    expect(deletions(dropped).sort()).toEqual(["dlv-2", "dlv-3", "dlv-4", "dlv-5"]);
    expect(dropped.every((e) => e.type === "remote_change" && e.fields.length === 0)).toBe(true);
    expect((await store.views("deliveries")).map((v) => v.entity)).toEqual(["dlv-0", "dlv-1", "dlv-6"]);
    expect(await store.unavailable()).toEqual([{ collection: "deliveries", entity: "dlv-6", seq: 7, code: "data_integrity" }]);
    expect(await store.dropStale(2)).toEqual({ events: [], dropped: 0, done: true }); // nothing left to do
    store.close();
  });

  it("keeps a database of the previous version and resets it the same way", async () => {
    const dbName = freshDb();
    // The layout of database version 2, with a pulled entity and cursor and no reset bookkeeping.
    const old = await openDB(dbName, 2, {
      upgrade(d) {
        d.createObjectStore("meta");
        const outbox = d.createObjectStore("outbox", { keyPath: "seq", autoIncrement: true });
        outbox.createIndex("entity", ["collection", "entity", "n"]);
        outbox.createIndex("pending", ["acked", "n"]);
        d.createObjectStore("entities", { keyPath: ["collection", "entity"] }).createIndex("collection", "collection");
        d.createObjectStore("rejections", { keyPath: "id" });
        d.createObjectStore("uploads", { keyPath: "id" });
        d.createObjectStore("blob_cache", { keyPath: "id" }).createIndex("usedAt", "usedAt");
      },
    });
    await old.put("meta", "phone-a", "replica");
    await old.put("meta", "c2", "cursor");
    await old.put("entities", entity("dlv-1", { "web-1": 1 }, { status: "pending" }));
    await old.put("entities", entity("dlv-2", { "web-1": 2 }, { status: "pending" }, 2));
    old.close();

    const store = await LocalStore.open(dbName, "phone-a");
    expect(await store.cursor()).toBe("c2");
    expect(await store.view("deliveries", "dlv-1")).toEqual(entity("dlv-1", { "web-1": 1 }, { status: "pending" }));
    await store.reset();
    await store.applyPage([entity("dlv-1", { "web-1": 1 }, { status: "pending" })], [], "r1");
    const end = await store.dropStale();
    expect(end).toEqual({ events: [{ type: "remote_change", collection: "deliveries", entity: "dlv-2", fields: [], deleted: true }], dropped: 1, done: true });
    expect((await store.views("deliveries")).map((v) => v.entity)).toEqual(["dlv-1"]);
    store.close();
  });
});

describe("evictions", () => {
  it("tell the app an entity it showed is gone; the leader's watches read again", async () => {
    const server = new FakeServer();
    const { client, events, d } = await open(server, freshDb());
    server.pages = [
      { changes: [entity("dlv-1", { "web-1": 1 }, { status: "x" }), entity("dlv-2", { "web-1": 2 }, { status: "x" }, 2), tombstone("dlv-3", { "web-1": 3 }, 3)], cursor: "c3" },
    ];
    await client.sync();
    const seen: string[][] = [];
    client.watch(() => d.list(), (rows) => seen.push(rows.map((r) => r.entity)));
    await new Promise((r) => setTimeout(r, 20));
    const before = events.length;
    // dlv-2 left the driver's scope (reassigned); dlv-3 was deleted already; dlv-9 was never on this device.
    server.pages = [
      {
        changes: [],
        cursor: "c6",
        evictions: [
          { collection: "deliveries", entity: "dlv-2", seq: 4 },
          { collection: "deliveries", entity: "dlv-3", seq: 5 },
          { collection: "deliveries", entity: "dlv-9", seq: 6 },
        ],
      },
    ];
    await client.sync();
    expect(await d.get("dlv-2")).toBeUndefined();
    expect(await client.views("deliveries")).toHaveProperty("size", 1);
    expect(events.slice(before).filter((e) => e.type === "remote_change")).toEqual([
      { type: "remote_change", collection: "deliveries", entity: "dlv-2", fields: [], deleted: true },
    ]);
    await new Promise((r) => setTimeout(r, 20));
    expect(seen.at(-1)).toEqual(["dlv-1"]);
    await client.close();
  });

  it("during the pull after a reset drop at once, not at its end", async () => {
    const server = new FakeServer();
    const { client, events, d } = await open(server, freshDb());
    server.pages = [{ changes: [entity("dlv-1", { "web-1": 1 }, { status: "x" }), entity("dlv-2", { "web-1": 2 }, { status: "x" }, 2)], cursor: "c2" }];
    await client.sync();
    events.length = 0;
    server.pages = [
      RESET,
      { changes: [entity("dlv-1", { "web-1": 1 }, { status: "x" })], cursor: "r1", more: true },
      { changes: [], cursor: "r2", evictions: [{ collection: "deliveries", entity: "dlv-2", seq: 4 }], more: true },
    ];
    cutPulls(server, (cursor) => cursor === "r2");
    await expect(client.sync()).rejects.toThrow(/in a tunnel/);
    expect((await d.list()).map((r) => r.entity)).toEqual(["dlv-1"]);
    expect(events.filter((e) => e.type === "remote_change")).toEqual([
      { type: "remote_change", collection: "deliveries", entity: "dlv-2", fields: [], deleted: true },
    ]); // dlv-1 came back as the device showed it: no event
    server.intercept = null;
    server.pages = [{ changes: [], cursor: "r3" }];
    await client.sync();
    expect((await d.list()).map((r) => r.entity)).toEqual(["dlv-1"]);
    expect(deletions(events)).toEqual(["dlv-2"]);
    await client.close();
  });
});

describe("a newer version of the app", () => {
  it("is not held up by a page still open on the older database version", async () => {
    const dbName = freshDb();
    const older = await LocalStore.open(dbName, "phone-a");
    await older.setMeta("cursor", "c1");
    // The newer code opens the same database at a higher version (another tab, or the updated service worker).
    const newer = await Promise.race([
      openDB(dbName, 1000),
      new Promise<null>((r) => setTimeout(() => r(null), 2000)),
    ]);
    expect(newer).not.toBeNull(); // not blocked by the older page's open connection
    expect(await newer!.get("meta", "cursor")).toBe("c1"); // what the older page stored is there
    newer!.close();
    await expect(older.setMeta("cursor", "c2")).rejects.toThrow(); // the older page fails loudly, not silently
  });
});
