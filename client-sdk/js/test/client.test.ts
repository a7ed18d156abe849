/** Writes are durable when they resolve, counters are never reused, reads are optimistic and reactive. */
import { openDB } from "idb";
import { describe, expect, it } from "vitest";

import { SyncClient } from "../src/client.js";
import { compareHlc } from "../src/clock.js";
import type { SyncEvent } from "../src/events.js";
import { LocalStore } from "../src/store.js";
import { WireError } from "../src/wire.js";
import { FakeServer, freshDb, until } from "./fake-server.js";

const SCHEMA = {
  deliveries: {
    fields: {
      status: { kind: "register" as const, rule: "precedence" as const, order: ["delivered", "failed"] },
      cod_cents: { kind: "counter" as const },
      scanned: { kind: "set" as const },
      notes: { kind: "text" as const },
      trail: { kind: "log" as const },
    },
  },
};

async function open(dbName = freshDb(), server = new FakeServer()): Promise<SyncClient> {
  return SyncClient.open({ url: "http://sync.test", token: "t0", dbName, fetch: server.fetch, schema: SCHEMA, transport: "http" });
}

describe("the outbox", () => {
  it("holds a write in IndexedDB, with its counter and HLC, when the write resolves", async () => {
    const dbName = freshDb();
    const client = await open(dbName);
    const change = await client.collection("deliveries").set("dlv-1", { status: "delivered", driver_id: "driver-1" });
    // A second, independent connection sees the committed rows.
    const other = await openDB(dbName);
    const rows = (await other.getAll("outbox")) as { n: number; change: { id: string } }[];
    expect(rows.map((r) => [r.n, r.change.id])).toEqual([[1, change.id]]);
    expect(await other.get("meta", "counter")).toBe(1);
    expect(await other.get("meta", "hlc")).toEqual(change.hlc);
    other.close();
    await client.close();
  });

  it("never reuses a counter after the tab closes and reopens", async () => {
    const dbName = freshDb();
    let client = await open(dbName);
    const first = await client.collection("deliveries").inc("dlv-1", "cod_cents", 5);
    await client.collection("deliveries").inc("dlv-1", "cod_cents", 5);
    const replica = client.replicaId;
    await client.close();
    client = await open(dbName);
    expect(client.replicaId).toBe(replica); // generated once, persisted
    const third = await client.collection("deliveries").inc("dlv-1", "cod_cents", 5);
    expect(third.n).toBe(3);
    expect(compareHlc(third.hlc, first.hlc)).toBeGreaterThan(0);
    expect(await client.pendingCount()).toBe(3);
    await client.close();
  });

  it("numbers writes from two clients on one database without a gap or a repeat", async () => {
    const dbName = freshDb();
    const [a, b] = [await open(dbName), await open(dbName)];
    await Promise.all(
      Array.from({ length: 20 }, (_, i) => [
        a.collection("deliveries").inc(`dlv-${i}`, "cod_cents", 1),
        b.collection("deliveries").inc(`dlv-${i}`, "cod_cents", 1),
      ]).flat(),
    );
    const store = await LocalStore.open(dbName);
    const ns = (await store.pending(500, 1 << 30, 1000)).map((r) => r.n);
    expect(ns).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    store.close();
    await a.close();
    await b.close();
  });

  it("refuses a write the server would refuse as a request, without using a number", async () => {
    const client = await open();
    const deliveries = client.collection("deliveries");
    await expect(deliveries.set("dlv 1/a", { status: "x" })).rejects.toBeInstanceOf(WireError);
    await expect(deliveries.set("dlv-1", { "1bad": "x" })).rejects.toBeInstanceOf(WireError);
    await expect(deliveries.editText("dlv-1", "notes", 3, 0, "x")).rejects.toBeInstanceOf(RangeError);
    expect((await deliveries.set("dlv-1", { status: "delivered" })).n).toBe(1);
    await client.close();
  });

  it("keeps a replica id given once and refuses another one for the database", async () => {
    const dbName = freshDb();
    const client = await SyncClient.open({ url: "http://x", token: "t", dbName, replicaId: "phone-7f3a" });
    await client.close();
    await expect(SyncClient.open({ url: "http://x", token: "t", dbName, replicaId: "phone-other" })).rejects.toThrow(
      /belongs to replica phone-7f3a/,
    );
  });
});

describe("optimistic reads", () => {
  it("show every kind of local edit at once", async () => {
    const client = await open();
    const d = client.collection("deliveries");
    await d.set("dlv-1", { status: "delivered", driver_id: "driver-1" });
    await d.inc("dlv-1", "cod_cents", 1250);
    await d.add("dlv-1", "scanned", "parcel-1", "parcel-2");
    await d.remove("dlv-1", "scanned", "parcel-2");
    await d.append("dlv-1", "trail", { lat: 25.2, lon: 55.27 });
    await d.editText("dlv-1", "notes", 0, 0, "Leave at door 🚪");
    await d.editText("dlv-1", "notes", 15, 0, " please"); // after the emoji: code points, not UTF-16 units
    await d.editText("dlv-1", "notes", 14, 1, "🏠"); // replace one astral code point
    expect(await d.get("dlv-1")).toEqual({
      status: "delivered",
      driver_id: "driver-1",
      cod_cents: 1250,
      scanned: ["parcel-1"],
      trail: [{ lat: 25.2, lon: 55.27 }],
      notes: "Leave at door 🏠 please",
    });
    expect((await d.view("dlv-1"))?.vv).toEqual({ [client.replicaId]: 8 });
    await d.delete("dlv-1");
    expect(await d.get("dlv-1")).toBeUndefined();
    expect(await d.list()).toEqual([]);
    await d.set("dlv-2", { status: "failed" });
    expect(await d.list()).toEqual([{ entity: "dlv-2", fields: { status: "failed" } }]);
    await client.close();
  });

  it("re-run watched queries after each local write and report the outbox", async () => {
    const client = await open();
    const d = client.collection("deliveries");
    const seen: number[] = [];
    const events: SyncEvent[] = [];
    client.subscribe((e) => events.push(e));
    const stop = client.watch(() => d.list(), (rows) => seen.push(rows.length));
    await until(() => seen.length === 1);
    await d.set("dlv-1", { status: "delivered" });
    await until(() => seen.at(-1) === 1);
    await d.set("dlv-2", { status: "delivered" });
    await until(() => seen.at(-1) === 2);
    stop();
    await d.set("dlv-3", { status: "delivered" });
    await new Promise((r) => setTimeout(r, 20));
    expect(seen.at(-1)).toBe(2);
    expect(events.filter((e) => e.type === "outbox").map((e) => (e as { pending: number }).pending)).toEqual([1, 2, 3]);
    expect(client.status()).toMatchObject({ outbox: 3, leader: false, connection: "offline", lastSyncAt: null });
    await client.close();
  });
});
