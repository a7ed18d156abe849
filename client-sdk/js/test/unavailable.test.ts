/** Entities a pull names `unavailable` (PROTOCOL §4.4): kept, remembered across restarts, read back with GET. */
import { describe, expect, it } from "vitest";

import { Backoff } from "../src/backoff.js";
import { SyncClient } from "../src/client.js";
import type { SyncEvent } from "../src/events.js";
import { LocalStore } from "../src/store.js";
import type { EntityView, Unavailable } from "../src/types.js";
import { UnavailableEntities } from "../src/unavailable.js";
import { FakeServer, freshDb, json, until } from "./fake-server.js";

const ENTITY_PATH = /^\/v1\/entities\/([^/]+)\/([^/]+)$/;

function entity(id: string, vv: Record<string, number>, fields: Record<string, string | number>, seq = 1): EntityView {
  const views: EntityView["fields"] = {};
  for (const [name, value] of Object.entries(fields)) {
    views[name] = typeof value === "number" ? { kind: "counter", value } : { kind: "register", value };
  }
  return { collection: "deliveries", entity: id, seq, vv, deleted: false, fields: views };
}

function named(id: string, seq: number): Unavailable {
  return { collection: "deliveries", entity: id, seq, code: "data_integrity" };
}

/** A client over HTTP whose clock the test moves, and the GETs the server saw. */
async function setup(dbName = freshDb(), server = new FakeServer()) {
  const clock = { ms: 1_800_000_000_000 };
  const client = await SyncClient.open({
    url: "http://sync.test",
    token: "t0",
    dbName,
    fetch: server.fetch,
    transport: "http",
    now: () => clock.ms,
  });
  const events: SyncEvent[] = [];
  client.subscribe((e) => events.push(e));
  const gets: string[] = [];
  /** What `GET /v1/entities/deliveries/{id}` answers, by entity id (404 when absent). */
  const answers = new Map<string, () => Response>();
  server.intercept = (path) => {
    const m = ENTITY_PATH.exec(path);
    if (!m) return undefined;
    const id = decodeURIComponent(m[2]!);
    gets.push(id);
    return (answers.get(id) ?? (() => json({ error: { code: "not_found", message: id } }, 404)))();
  };
  return { server, client, events, gets, answers, clock, dbName, d: client.collection("deliveries") };
}

const integrity = (): Response => json({ error: { code: "data_integrity", message: "stored state failed its check" } }, 500);

/** dlv-1 and dlv-2 pulled; then a page names dlv-1 unavailable and brings dlv-2's news. */
async function pulledThenNamed(s: Awaited<ReturnType<typeof setup>>): Promise<void> {
  s.server.pages.push({
    changes: [entity("dlv-1", { "web-1": 1 }, { status: "pending", note: "ring twice" }), entity("dlv-2", { "web-1": 2 }, { status: "pending" }, 2)],
    cursor: "c2",
  });
  await s.client.sync();
  s.server.pages.push({
    changes: [entity("dlv-2", { "web-1": 4 }, { status: "out_for_delivery" }, 4)],
    cursor: "c4",
    unavailable: [named("dlv-1", 3)],
  });
  await s.client.sync();
}

describe("an entity named unavailable", () => {
  it("keeps its local copy, is listed and announced once, and survives a restart", async () => {
    const s = await setup();
    await pulledThenNamed(s);
    expect(await s.d.get("dlv-1")).toEqual({ status: "pending", note: "ring twice" });
    expect(await s.d.get("dlv-2")).toEqual({ status: "out_for_delivery" }); // the rest of the page applied
    expect(await s.client.unavailable()).toEqual([named("dlv-1", 3)]);
    expect(s.events.filter((e) => e.type === "unavailable")).toEqual([
      { type: "unavailable", collection: "deliveries", entity: "dlv-1", code: "data_integrity" },
    ]);
    expect(s.gets).toEqual([]); // not read again in the round that named it
    // Named again by a later page: still one entry, no second event.
    s.server.pages.push({ changes: [], cursor: "c5", unavailable: [named("dlv-1", 5)] });
    s.answers.set("dlv-1", integrity);
    await s.client.sync();
    expect(await s.client.unavailable()).toEqual([named("dlv-1", 5)]);
    expect(s.events.filter((e) => e.type === "unavailable")).toHaveLength(1);
    await s.client.close();

    // The set was committed with the page: a new client on the database still knows it.
    const store = await LocalStore.open(s.dbName);
    expect(await store.unavailable()).toEqual([named("dlv-1", 5)]);
    expect(await store.cursor()).toBe("c5");
    store.close();
  });

  it("is replaced by the whole state the next round's GET answers (200), then leaves the list", async () => {
    const s = await setup();
    await pulledThenNamed(s);
    const repaired = entity("dlv-1", { "web-1": 1, "phone-b": 2 }, { status: "delivered", cod_cents: 2000 }, 3);
    s.answers.set("dlv-1", () => json(repaired));
    s.server.pages.push({ changes: [], cursor: "c5", unavailable: [named("dlv-2", 5)] }); // read from the next round on
    const changed: string[] = [];
    const stop = s.client.watch(() => s.d.get("dlv-1"), (v) => changed.push(JSON.stringify(v?.["status"])));
    const stats = await s.client.sync();
    expect(s.gets).toEqual(["dlv-1"]);
    expect(stats.pulled).toBe(1);
    // Replaced, not merged: the field the whole state lacks is gone.
    expect(await s.d.view("dlv-1")).toEqual(repaired);
    expect(await s.client.unavailable()).toEqual([named("dlv-2", 5)]);
    expect(s.events.filter((e) => e.type === "remote_change" && e.entity === "dlv-1").at(-1)).toEqual({
      type: "remote_change",
      collection: "deliveries",
      entity: "dlv-1",
      fields: ["cod_cents", "status"],
      deleted: false,
    });
    await until(() => changed.at(-1) === JSON.stringify("delivered")); // watched queries re-run
    stop();
    s.answers.set("dlv-2", () => json(entity("dlv-2", { "web-1": 5 }, { status: "delivered" }, 5)));
    await s.client.sync();
    expect(s.gets).toEqual(["dlv-1", "dlv-2"]);
    expect(await s.client.unavailable()).toEqual([]);
    await s.client.sync();
    expect(s.gets).toEqual(["dlv-1", "dlv-2"]); // nothing left to read
    await s.client.close();
  });

  it("announces its return even when the repaired state is what the device held", async () => {
    const s = await setup();
    await pulledThenNamed(s);
    s.answers.set("dlv-1", () => json(entity("dlv-1", { "web-1": 1 }, { status: "pending", note: "ring twice" })));
    await s.client.sync();
    expect(s.events.at(-1)).toMatchObject({ type: "remote_change", entity: "dlv-1", deleted: false });
    expect(await s.client.unavailable()).toEqual([]);
    await s.client.close();
  });

  it("is dropped locally when the GET answers 404 (gone, or out of scope)", async () => {
    const s = await setup();
    await pulledThenNamed(s);
    await s.client.sync(); // no answer set: 404
    expect(s.gets).toEqual(["dlv-1"]);
    expect(await s.d.view("dlv-1")).toBeUndefined();
    expect(await s.d.get("dlv-2")).toEqual({ status: "out_for_delivery" });
    expect(await s.client.unavailable()).toEqual([]);
    expect(s.events.at(-1)).toEqual({ type: "remote_change", collection: "deliveries", entity: "dlv-1", fields: [], deleted: true });
    await s.client.close();
  });

  it("stays while the GET answers 500 data_integrity or the network fails, read again after a growing wait", async () => {
    const s = await setup();
    await pulledThenNamed(s);
    s.answers.set("dlv-1", integrity);
    await s.client.sync();
    expect(s.gets).toEqual(["dlv-1"]);
    expect(await s.d.get("dlv-1")).toEqual({ status: "pending", note: "ring twice" });
    expect(await s.client.unavailable()).toEqual([named("dlv-1", 3)]);
    // Rounds within the wait (at least 30 s) read nothing.
    s.clock.ms += 29_000;
    await s.client.sync();
    expect(s.gets).toHaveLength(1);
    s.clock.ms += 31_000; // 60 s: the first wait is over whatever its jitter
    s.answers.set("dlv-1", () => {
      throw new TypeError("network connection lost");
    });
    await s.client.sync(); // a network error does not fail the round
    expect(s.gets).toHaveLength(2);
    expect(await s.client.unavailable()).toHaveLength(1);
    s.clock.ms += 59_000; // the second wait is 60-120 s
    await s.client.sync();
    expect(s.gets).toHaveLength(2);
    s.clock.ms += 61_000;
    s.answers.set("dlv-1", () => json(entity("dlv-1", { "web-1": 3 }, { status: "delivered" }, 3)));
    await s.client.sync();
    expect(s.gets).toHaveLength(3);
    expect(await s.client.unavailable()).toEqual([]);
    expect(await s.d.get("dlv-1")).toEqual({ status: "delivered" });
    expect(s.events.filter((e) => e.type === "connection" && e.state === "offline")).toEqual([]);
    await s.client.close();
  });

  it("is forgotten on reset (the client pulls everything again) and when it leaves the scope", async () => {
    const s = await setup();
    await pulledThenNamed(s);
    s.server.pages.push({ changes: [], cursor: null, reset: true }, { changes: [entity("dlv-2", { "web-1": 4 }, { status: "x" }, 4)], cursor: "c9" });
    await s.client.sync();
    expect(await s.client.unavailable()).toEqual([]);
    expect(s.gets).toEqual([]);

    s.server.pages.push({ changes: [], cursor: "c10", unavailable: [named("dlv-2", 10)] });
    await s.client.sync();
    expect(await s.client.unavailable()).toEqual([named("dlv-2", 10)]);
    s.server.pages.push({ changes: [], cursor: "c11", evictions: [{ collection: "deliveries", entity: "dlv-2", seq: 11 }] });
    await s.client.sync();
    expect(await s.client.unavailable()).toEqual([]);
    expect(await s.d.view("dlv-2")).toBeUndefined();
    expect(s.gets).toEqual([]);
    await s.client.close();
  });

  it("is read again after a restart, from the second round on", async () => {
    const first = await setup();
    await pulledThenNamed(first);
    await first.client.close();
    const s = await setup(first.dbName, first.server);
    s.answers.set("dlv-1", () => json(entity("dlv-1", { "web-1": 3 }, { status: "delivered" }, 3)));
    await s.client.sync();
    expect(s.gets).toEqual([]);
    await s.client.sync();
    expect(s.gets).toEqual(["dlv-1"]);
    expect(await s.client.unavailable()).toEqual([]);
    await s.client.close();
  });
});

describe("reading unavailable entities back", () => {
  it("reads at most one batch per round, one at a time, and the rest in the next rounds", async () => {
    const store = await LocalStore.open(freshDb());
    const many = Array.from({ length: 5 }, (_, i) => named(`dlv-${i}`, i + 1));
    await store.applyPage([], [], "c5", many);
    let inFlight = 0;
    let most = 0;
    const reads: string[] = [];
    const reader = {
      async entity(collection: string, id: string): Promise<EntityView | undefined> {
        inFlight++;
        most = Math.max(most, inFlight);
        reads.push(id);
        await new Promise((r) => setTimeout(r, 1));
        inFlight--;
        return entity(id, { "web-1": 1 }, { status: "delivered" });
      },
    };
    const events: SyncEvent[] = [];
    const entities = new UnavailableEntities(store, reader, (e) => events.push(e), { batch: 2, backoff: new Backoff(60, 600, () => 0) });
    expect(await entities.afterRound()).toBe(0); // the naming round
    expect(await entities.afterRound()).toBe(2);
    expect(await entities.afterRound()).toBe(2);
    expect(await entities.afterRound()).toBe(1);
    expect(reads).toEqual(["dlv-0", "dlv-1", "dlv-2", "dlv-3", "dlv-4"]);
    expect(most).toBe(1);
    expect(await entities.list()).toEqual([]);
    expect(events.filter((e) => e.type === "remote_change")).toHaveLength(5);
    store.close();
  });
});

describe("a change to an unavailable entity", () => {
  it("rejected with data_integrity is a dead letter like any other; the changes behind it go on", async () => {
    const s = await setup();
    s.server.rejectIf = (c) => (c.entity === "dlv-1" ? "data_integrity" : null);
    await s.d.set("dlv-1", { status: "delivered" });
    await s.d.set("dlv-2", { status: "delivered" });
    const stats = await s.client.sync();
    expect(stats).toMatchObject({ rejected: 1, applied: 1 });
    expect((await s.client.rejections()).map((r) => [r.entity, r.code])).toEqual([["dlv-1", "data_integrity"]]);
    expect(s.events.filter((e) => e.type === "rejected")).toMatchObject([{ entity: "dlv-1", code: "data_integrity" }]);
    expect(await s.client.pendingCount()).toBe(0);
    await s.client.close();
  });
});
