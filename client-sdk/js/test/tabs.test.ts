/** Several tabs on one database: one leader syncs, followers hear about it, nothing is pushed twice. */
import { describe, expect, it } from "vitest";

import { Backoff } from "../src/backoff.js";
import { SyncClient } from "../src/client.js";
import type { SyncEvent } from "../src/events.js";
import { LocalLocks } from "../src/tabs.js";
import type { EntityView } from "../src/types.js";
import { FakeServer, freshDb, until } from "./fake-server.js";

async function tab(server: FakeServer, dbName: string, locks: LocalLocks) {
  const client = await SyncClient.open({
    url: "http://sync.test",
    token: "t0",
    dbName,
    fetch: server.fetch,
    transport: "http",
    locks,
    syncIntervalMs: 60_000,
    backoff: new Backoff(0.01, 0.05),
  });
  const events: SyncEvent[] = [];
  client.subscribe((e) => events.push(e));
  return { client, events, d: client.collection("deliveries") };
}

describe("tabs", () => {
  it("elect one leader; a follower's writes are pushed once by the leader", async () => {
    const server = new FakeServer();
    const dbName = freshDb();
    const locks = new LocalLocks(); // the browser's navigator.locks, shared by the tabs of one origin
    const a = await tab(server, dbName, locks);
    const b = await tab(server, dbName, locks);
    await a.client.start();
    await b.client.start();
    expect([a.client.status().leader, b.client.status().leader]).toEqual([true, false]);
    await until(() => a.client.status().connection === "http");
    await until(() => b.client.status().connection === "http"); // the leader's state reaches the follower
    const late = await tab(server, dbName, locks); // a tab opened later learns it at once
    await late.client.start();
    await until(() => late.client.status().connection === "http");
    await late.client.close();

    for (let i = 0; i < 10; i++) await b.d.inc("dlv-1", "cod_cents", 1);
    await until(() => server.log.length === 10);
    await until(async () => (await b.client.pendingCount()) === 0);
    const ids = server.pushes.flatMap((p) => p.changes.map((c) => c.id));
    expect(new Set(ids).size).toBe(ids.length); // no change pushed twice
    await until(() => b.events.some((e) => e.type === "outbox" && e.pending === 0));

    // A remote change pulled by the leader reaches the follower's subscribers and watches.
    const seen: (number | undefined)[] = [];
    b.client.watch(async () => (await b.d.get("dlv-7"))?.["eta"] as number | undefined, (v) => seen.push(v));
    const view: EntityView = {
      collection: "deliveries",
      entity: "dlv-7",
      seq: 11,
      vv: { "web-1": 1 },
      deleted: false,
      fields: { eta: { kind: "register", value: 12 } },
    };
    server.pages = [{ changes: [view], cursor: "c11" }];
    await a.d.set("dlv-8", { status: "delivered" }); // wakes the leader's loop
    await until(() => b.events.some((e) => e.type === "remote_change" && e.entity === "dlv-7"));
    await until(() => seen.at(-1) === 12);

    // The leader's tab closes: the follower takes over and syncs its own writes.
    await a.client.close();
    await until(() => b.client.status().leader);
    await b.d.set("dlv-9", { status: "failed" });
    await until(() => server.log.some((c) => c.entity === "dlv-9"));
    const all = server.pushes.flatMap((p) => p.changes.map((c) => c.id));
    expect(new Set(all).size).toBe(all.length);
    await b.client.close();
  });

  it("an explicit sync() in a follower waits for the leader's round instead of pushing alongside it", async () => {
    const server = new FakeServer();
    const dbName = freshDb();
    const locks = new LocalLocks();
    const a = await tab(server, dbName, locks);
    const b = await tab(server, dbName, locks);
    for (let i = 0; i < 30; i++) await b.d.inc(`dlv-${i}`, "cod_cents", 1);
    await Promise.all([a.client.sync(), b.client.sync(), a.client.sync()]);
    expect(server.log).toHaveLength(30);
    const ids = server.pushes.flatMap((p) => p.changes.map((c) => c.id));
    expect(ids).toHaveLength(30);
    await a.client.close();
    await b.client.close();
  });
});
