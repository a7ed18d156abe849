/** `sync()`: every push result, resets, evictions, 413 splitting and token refresh (PROTOCOL §4, §8). */
import { describe, expect, it } from "vitest";

import { parseRetryAfter } from "../src/backoff.js";
import { SyncClient } from "../src/client.js";
import type { SyncEvent } from "../src/events.js";
import { LocalStore } from "../src/store.js";
import type { EntityView } from "../src/types.js";
import { FakeServer, freshDb, json } from "./fake-server.js";

async function setup(token: string | (() => string) = "t0") {
  const server = new FakeServer();
  const dbName = freshDb();
  const client = await SyncClient.open({ url: "http://sync.test/", token, dbName, fetch: server.fetch, transport: "http" });
  const events: SyncEvent[] = [];
  client.subscribe((e) => events.push(e));
  return { server, client, events, dbName, d: client.collection("deliveries") };
}

function entity(id: string, vv: Record<string, number>, fields: EntityView["fields"], seq = 1): EntityView {
  return { collection: "deliveries", entity: id, seq, vv, deleted: false, fields };
}

describe("sync()", () => {
  it("pushes the outbox once, in counter order, and pulls", async () => {
    const { server, client, d } = await setup();
    await d.set("dlv-1", { status: "delivered" });
    await d.inc("dlv-1", "cod_cents", 5);
    const stats = await client.sync();
    expect(stats).toMatchObject({ pushed: 2, pulled: 0, rejected: 0 });
    expect(server.log.map((c) => c.n)).toEqual([1, 2]);
    expect(server.pulls).toHaveLength(1);
    expect(await client.pendingCount()).toBe(0);
    expect((await client.sync()).pushed).toBe(0); // nothing pushed twice
    expect(server.log).toHaveLength(2);
    expect(client.status().lastSyncAt).not.toBeNull();
    await client.close();
  });

  it("resends a push whose answer was lost; the server's duplicates settle it, each change applied once", async () => {
    const { server, client, d } = await setup();
    for (let i = 0; i < 3; i++) await d.inc("dlv-1", "cod_cents", 1);
    server.intercept = (path, body) => {
      if (path !== "/v1/sync/push") return undefined;
      server.push(body as Parameters<FakeServer["push"]>[0]); // applied on the server...
      throw new TypeError("network connection lost"); // ...but the answer never arrives
    };
    await expect(client.sync()).rejects.toThrow(/network connection lost/);
    expect(await client.pendingCount()).toBe(3);
    server.intercept = null;
    const stats = await client.sync();
    expect(stats).toMatchObject({ duplicates: 3, applied: 0, pushed: 3 });
    expect(server.log.map((c) => c.n)).toEqual([1, 2, 3]);
    expect(await client.pendingCount()).toBe(0);
    await client.close();
  });

  it("drops a rejected change, reports it and keeps it for the app", async () => {
    const { server, client, events, d } = await setup();
    server.rejectIf = (c) => (c.n === 1 ? "forbidden" : null);
    await d.set("dlv-9", { status: "delivered" });
    await d.set("dlv-1", { status: "failed" });
    const stats = await client.sync();
    expect(stats).toMatchObject({ pushed: 1, rejected: 1 });
    const rejected = events.filter((e) => e.type === "rejected");
    expect(rejected).toMatchObject([{ n: 1, entity: "dlv-9", code: "forbidden" }]);
    expect((await client.rejections()).map((r) => r.entity)).toEqual(["dlv-9"]);
    await client.clearRejections();
    expect(await client.rejections()).toEqual([]);
    await client.close();
  });

  it("renumbers and resends changes whose counter the server already used (n_reused)", async () => {
    const { server, client, d } = await setup();
    server.hwm.set(client.replicaId, 2); // another install of this replica id used 1 and 2
    server.ids.set(`${client.replicaId}:1`, "x1");
    server.ids.set(`${client.replicaId}:2`, "x2");
    const a = await d.set("dlv-1", { status: "a" });
    const b = await d.set("dlv-1", { status: "b" });
    const stats = await client.sync();
    expect(stats.renumbered).toBe(2);
    expect(server.log.map((c) => [c.id, c.n])).toEqual([
      [a.id, 3],
      [b.id, 4],
    ]);
    expect((await d.set("dlv-1", { status: "c" })).n).toBe(5);
    await client.close();
  });

  it("resends from the counter the server expects (out_of_order), never skipping one", async () => {
    const { server, client, d, dbName } = await setup();
    await d.set("dlv-1", { status: "a" });
    await d.set("dlv-1", { status: "b" });
    await d.set("dlv-1", { status: "c" });
    // The server lost change 1 after acknowledging it (restored from a backup): our copy is gone too.
    const store = await LocalStore.open(dbName);
    const [first] = await store.pending(1, 1 << 20, 1);
    await store.db.delete("outbox", first!.seq); // gone, counter and all: no renumbering on our side
    store.close();
    const stats = await client.sync();
    expect(server.log.map((c) => c.n)).toEqual([1, 2]);
    expect(server.log.map((c) => (c.ops[0] as { value: string }).value)).toEqual(["b", "c"]);
    expect(stats.renumbered).toBe(2);
    expect(stats.resets).toBe(1); // its cursor is not to be trusted: pull from scratch
    await client.close();
  });

  it("splits a push the server finds too large, and drops a single change that can never fit", async () => {
    const { server, client, d, events } = await setup();
    server.intercept = (path, body) => {
      const changes = (body as { changes?: unknown[] } | null)?.changes;
      if (path === "/v1/sync/push" && changes && changes.length > 2) {
        return json({ error: { code: "too_many_changes", message: "max 2" } }, 413);
      }
      return undefined;
    };
    for (let i = 0; i < 5; i++) await d.inc("dlv-1", "cod_cents", 1);
    expect((await client.sync()).pushed).toBe(5);
    expect(server.pushes.map((p) => p.changes.length)).toEqual([2, 2, 1]);
    server.intercept = (path) =>
      path === "/v1/sync/push" ? json({ error: { code: "body_too_large", message: "no" } }, 413) : undefined;
    await d.set("dlv-1", { blob: "x".repeat(1000) });
    expect((await client.sync()).rejected).toBe(1);
    expect(events.at(-1)).toMatchObject({ type: "outbox", pending: 0 });
    expect(events.find((e) => e.type === "rejected")).toMatchObject({ code: "body_too_large" });
    await client.close();
  });

  it("closes the gap a change too large for any push leaves: the next ones take its number, and nothing is reset", async () => {
    const { server, client, d, events, dbName } = await setup();
    server.intercept = (path, body) =>
      path === "/v1/sync/push" && JSON.stringify(body).length > 200_000
        ? json({ error: { code: "body_too_large", message: "over the limit" } }, 413)
        : undefined;
    server.pages = [{ changes: [entity("dlv-9", { other: 1 }, { status: { kind: "register", value: "pending" } })], cursor: "c1", more: false }];
    await client.sync();
    await d.append("dlv-1", "trail", ...Array.from({ length: 8 }, () => "x".repeat(40_000))); // n = 1, ~320 KB
    const kept = await d.set("dlv-2", { status: "delivered" }); // n = 2
    await d.set("dlv-3", { status: "delivered" }); // n = 3
    expect(kept.n).toBe(2);
    const pullsBefore = server.pulls.length;
    const stats = await client.sync();
    expect(stats).toMatchObject({ rejected: 1, renumbered: 2, resets: 0, pushed: 2 });
    expect(events.some((e) => e.type === "reset")).toBe(false);
    expect(events.find((e) => e.type === "rejected")).toMatchObject({ code: "body_too_large", n: 1, entity: "dlv-1" });
    // The server saw no gap: the two others as 1 and 2, and no out_of_order answer on the way.
    expect(server.log.map((c) => [c.entity, c.n])).toEqual([
      ["dlv-2", 1],
      ["dlv-3", 2],
    ]);
    expect(server.log[0]!.id).toBe(kept.id);
    expect(server.pulls.slice(pullsBefore).map((p) => p.cursor)).toEqual(["c1"]); // on from the cursor, not from scratch
    expect(await d.get("dlv-9")).toEqual({ status: "pending" }); // the synced state stays
    const store = await LocalStore.open(dbName);
    expect(await store.counter()).toBe(2);
    store.close();
    expect((await d.set("dlv-4", { status: "x" })).n).toBe(3);
    expect((await client.sync()).pushed).toBe(1);
    await client.close();
  });

  it("takes back the number of a too large change that was the last one written", async () => {
    const { server, client, d, events, dbName } = await setup();
    await d.set("dlv-1", { status: "a" }); // n = 1
    await client.sync();
    server.intercept = (path) => (path === "/v1/sync/push" ? json({ error: { code: "body_too_large", message: "no" } }, 413) : undefined);
    await d.set("dlv-1", { blob: "x".repeat(1000) }); // n = 2, refused alone
    expect(await client.sync()).toMatchObject({ rejected: 1, renumbered: 0, resets: 0 });
    const store = await LocalStore.open(dbName);
    expect(await store.counter()).toBe(1);
    store.close();
    server.intercept = null;
    expect((await d.set("dlv-1", { status: "b" })).n).toBe(2);
    expect(await client.sync()).toMatchObject({ pushed: 1, resets: 0, renumbered: 0 });
    expect(server.log.map((c) => c.n)).toEqual([1, 2]);
    expect(events.some((e) => e.type === "reset")).toBe(false);
    await client.close();
  });

  it("asks for a fresh token on 401 and loses no write", async () => {
    let calls = 0;
    const { server, client, d } = await setup(() => `token-${++calls}`);
    server.intercept = (_path, _body, token) =>
      token === "token-1" ? json({ error: { code: "token_expired", message: "expired" } }, 401) : undefined;
    await d.set("dlv-1", { status: "delivered" });
    expect((await client.sync()).pushed).toBe(1);
    expect(server.tokens).toEqual(["token-1", "token-2", "token-2"]);
    expect(server.log).toHaveLength(1);
    await client.close();
  });

  it("keeps the outbox and raises when the server refuses with a request error", async () => {
    const { server, client, d } = await setup();
    server.intercept = () => json({ error: { code: "rate_limited", message: "slow down" } }, 429, { "Retry-After": "7" });
    await d.set("dlv-1", { status: "delivered" });
    await expect(client.sync()).rejects.toMatchObject({ status: 429, code: "rate_limited", retryAfter: 7 });
    expect(await client.pendingCount()).toBe(1);
    expect(client.status().lastError).toContain("rate_limited");
    await client.close();
  });

  it("merges pulled pages, reports remote changes and conflicts, and applies evictions", async () => {
    const { server, client, events, d } = await setup();
    await d.set("dlv-1", { status: "out_for_delivery" });
    server.pages = [
      {
        changes: [
          entity("dlv-1", { "web-1": 1, [client.replicaId]: 1 }, {
            status: {
              kind: "register",
              value: "failed",
              siblings: [
                { value: "out_for_delivery", replica: client.replicaId, n: 1, hlc: [1, 0] },
                { value: "failed", replica: "web-1", n: 1, hlc: [2, 0] },
              ],
            },
          }),
          entity("dlv-2", { "web-1": 2 }, { cod_cents: { kind: "counter", value: 3 } }, 2),
        ],
        cursor: "c2",
        more: true,
      },
      { changes: [], evictions: [{ collection: "deliveries", entity: "dlv-2", seq: 3 }], cursor: "c3", more: false },
    ];
    const stats = await client.sync();
    expect(stats).toMatchObject({ pushed: 1, pulled: 2, pages: 2 });
    expect(server.pulls.map((p) => p.cursor)).toEqual([null, "c2"]);
    expect(await d.get("dlv-1")).toEqual({ status: "failed" });
    expect(await d.get("dlv-2")).toBeUndefined(); // evicted
    const types = events.filter((e) => e.type === "remote_change" || e.type === "conflict").map((e) => e.type);
    expect(types).toEqual(["remote_change", "conflict", "remote_change", "remote_change"]);
    // The eviction of an entity the device showed is told as a deletion.
    expect(events.filter((e) => e.type === "remote_change").at(-1)).toEqual({ type: "remote_change", collection: "deliveries", entity: "dlv-2", fields: [], deleted: true });
    expect(events.find((e) => e.type === "conflict")).toMatchObject({ field: "status", value: "failed", mine: true });
    // The next pull continues from the stored cursor.
    await client.sync();
    expect(server.pulls.at(-1)?.cursor).toBe("c3");
    await client.close();
  });

  it("drops synced state but keeps the outbox on reset, then pulls from the start", async () => {
    const { server, client, events, d } = await setup();
    server.pages = [{ changes: [entity("dlv-1", { "web-1": 1 }, { eta: { kind: "register", value: 5 } })], cursor: "c1" }];
    await client.sync();
    await d.inc("dlv-9", "cod_cents", 2);
    server.intercept = (path) => (path === "/v1/sync/push" ? json({ error: { code: "unavailable", message: "db" } }, 503) : undefined);
    await expect(client.sync()).rejects.toMatchObject({ status: 503 });
    server.intercept = null;
    server.pages = [{ reset: true, changes: [], cursor: null }, { changes: [], cursor: "c9" }];
    await client.sync();
    expect(server.pulls.slice(-2).map((p) => p.cursor)).toEqual(["c1", null]);
    expect(await d.get("dlv-1")).toBeUndefined();
    expect(server.log.map((c) => c.entity)).toEqual(["dlv-9"]);
    expect(events.some((e) => e.type === "reset")).toBe(true);
    await client.close();
  });
});

describe("Retry-After", () => {
  it("reads delta-seconds and HTTP dates", () => {
    expect(parseRetryAfter("12")).toBe(12);
    expect(parseRetryAfter("Wed, 21 Oct 2015 07:28:10 GMT", Date.parse("Wed, 21 Oct 2015 07:28:00 GMT"))).toBe(10);
    expect(parseRetryAfter("soon")).toBeNull();
    expect(parseRetryAfter(null)).toBeNull();
  });
});
