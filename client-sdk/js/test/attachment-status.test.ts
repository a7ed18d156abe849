/** Pending attachments: statuses kept from pulls, refreshed by id after rounds and with backoff (PROTOCOL §10.2). */
import { describe, expect, it } from "vitest";

import type { RemoteStatus } from "../src/attachments-ref.js";
import { Backoff } from "../src/backoff.js";
import { SyncClient } from "../src/client.js";
import type { SyncEvent } from "../src/events.js";
import { LocalLocks } from "../src/tabs.js";
import type { EntityView, Json } from "../src/types.js";
import { FakeServer, freshDb, json, until } from "./fake-server.js";

const STATUS = "/v1/attachments/status";
const SHA = "0".repeat(64);

function ref(id: string, mediaType = "image/jpeg"): Json {
  return { $attachment: { id, size: 3, sha256: SHA, media_type: mediaType } };
}

function delivery(entity: string, attachments: Record<string, RemoteStatus>, seq = 1): EntityView {
  const ids = Object.keys(attachments);
  return {
    collection: "deliveries",
    entity,
    seq,
    vv: { "phone-a": seq },
    deleted: false,
    fields: {
      pod_photo: { kind: "register", value: ref(ids[0] ?? "none") },
      ...(ids[1] ? { signature: { kind: "register", value: ref(ids[1], "image/png") } } : {}),
    },
    attachments,
  };
}

/** A fake server whose status endpoint answers from `statuses` (ids it does not list are absent). */
class StatusServer extends FakeServer {
  statuses = new Map<string, RemoteStatus>();
  asked: string[][] = [];
  failStatus: number | null = null;

  constructor() {
    super();
    this.intercept = (path, body) => {
      if (path !== STATUS) return undefined;
      const ids = (body as { ids: string[] }).ids;
      this.asked.push(ids);
      if (this.failStatus !== null) return json({ error: { code: "unavailable", message: "down" } }, this.failStatus);
      const attachments = Object.fromEntries(ids.flatMap((id) => (this.statuses.has(id) ? [[id, this.statuses.get(id)]] : [])));
      return json({ attachments });
    };
  }
}

async function open(server: FakeServer, dbName = freshDb(), locks = new LocalLocks()) {
  const client = await SyncClient.open({
    url: "http://sync.test",
    token: "t0",
    dbName,
    fetch: server.fetch,
    transport: "http",
    locks,
    syncIntervalMs: 600_000, // no polling rounds: what the client learns comes from the status refresh
    backoff: new Backoff(0.01, 0.05),
    attachments: { statusRefreshMs: 20 },
  });
  const events: SyncEvent[] = [];
  client.subscribe((e) => events.push(e));
  return { client, events };
}

describe("attachment statuses", () => {
  it("keeps the statuses a pull brought and learns available and refused without any entity change", async () => {
    const server = new StatusServer();
    server.pages = [{ changes: [delivery("dlv-1", { p1: "pending", s1: "pending" })], cursor: "c1", more: false }];
    server.statuses.set("p1", "pending").set("s1", "pending");
    const { client, events } = await open(server);
    await client.start();
    await until(async () => (await client.attachments.remoteStatus("p1")) === "pending");
    expect(await client.attachments.remoteStatus("s1")).toBe("pending");
    expect(await client.attachments.remoteStatus("never-pulled")).toBeUndefined();
    await until(() => server.asked.length >= 2); // after the round, then with backoff
    expect(server.asked[0]).toEqual(["p1", "s1"]);
    const pullsBefore = server.pulls.length;

    server.statuses.set("p1", "available").set("s1", "refused");
    await until(() => events.filter((e) => e.type === "attachment").length === 2, 3000);
    const changes = events.filter((e) => e.type === "attachment");
    expect(changes).toEqual([
      { type: "attachment", id: "p1", status: "available", previous: "pending" },
      { type: "attachment", id: "s1", status: "refused", previous: "pending" },
    ]);
    expect(await client.attachments.remoteStatus("p1")).toBe("available");
    expect((await client.collection("deliveries").view("dlv-1"))?.attachments).toEqual({ p1: "available", s1: "refused" });
    expect(server.pulls.length).toBe(pullsBefore); // learnt without a pull
    expect(events.filter((e) => e.type === "remote_change")).toHaveLength(1);

    // Nothing pending any more: no further requests.
    const asked = server.asked.length;
    await new Promise((r) => setTimeout(r, 150));
    expect(server.asked.length).toBe(asked);
    await client.close();
  });

  it("asks in batches of at most 500 ids and forgets the ids the server leaves out", async () => {
    const server = new StatusServer();
    const many = Object.fromEntries(Array.from({ length: 1100 }, (_, i) => [`a${String(i).padStart(4, "0")}`, "pending" as const]));
    server.pages = [{ changes: [delivery("dlv-1", many)], cursor: "c1", more: false }];
    server.statuses.set("a0007", "available");
    const { client } = await open(server);
    await client.sync(); // not the leader: a plain sync does not refresh
    expect(server.asked).toEqual([]);
    const changed = await client.attachments.refreshStatuses();
    expect(server.asked.map((ids) => ids.length)).toEqual([500, 500, 100]);
    expect(changed).toEqual([{ id: "a0007", status: "available", previous: "pending" }]);
    expect((await client.collection("deliveries").view("dlv-1"))?.attachments).toEqual({ a0007: "available" });
    expect(await client.attachments.remoteStatus("a0001")).toBeUndefined();
    expect(await client.attachments.refreshStatuses()).toEqual([]);
    expect(server.asked).toHaveLength(3); // nothing pending: nothing asked
    await client.close();
  });

  it("asks about a reference pulled without a status (a live frame may omit them)", async () => {
    const server = new StatusServer();
    const bare = delivery("dlv-1", { p1: "pending", s1: "pending" });
    delete bare.attachments;
    server.pages = [{ changes: [bare], cursor: "c1", more: false }];
    server.statuses.set("p1", "available");
    const { client, events } = await open(server);
    await client.start();
    await until(() => events.some((e) => e.type === "attachment"), 3000);
    expect(events.filter((e) => e.type === "attachment")).toEqual([{ type: "attachment", id: "p1", status: "available", previous: null }]);
    expect(await client.attachments.remoteStatus("p1")).toBe("available");
    expect(await client.attachments.remoteStatus("s1")).toBeUndefined();
    // s1 is not visible to this token: asked once after the round, not again with backoff.
    await new Promise((r) => setTimeout(r, 200));
    expect(server.asked.filter((ids) => ids.includes("s1"))).toHaveLength(1);
    await client.close();
  });

  it("a failing status request fails no sync, and is retried with backoff", async () => {
    const server = new StatusServer();
    server.pages = [{ changes: [delivery("dlv-1", { p1: "pending" })], cursor: "c1", more: false }];
    server.failStatus = 503;
    const { client, events } = await open(server);
    await client.start();
    await until(() => server.asked.length >= 3);
    expect(client.status().lastError).toBeNull();
    server.failStatus = null;
    server.statuses.set("p1", "available");
    await until(() => events.some((e) => e.type === "attachment" && e.status === "available"), 3000);
    await client.close();
  });

  it("only the leader tab asks; a follower hears the change and its watches read again", async () => {
    const server = new StatusServer();
    server.pages = [{ changes: [delivery("dlv-1", { p1: "pending" })], cursor: "c1", more: false }];
    server.statuses.set("p1", "pending");
    const dbName = freshDb();
    const locks = new LocalLocks();
    const leader = await open(server, dbName, locks);
    const follower = await open(server, dbName, locks);
    await leader.client.start();
    await follower.client.start();
    expect([leader.client.status().leader, follower.client.status().leader]).toEqual([true, false]);
    await until(async () => (await follower.client.attachments.remoteStatus("p1")) === "pending");
    const seen: (string | undefined)[] = [];
    follower.client.watch(
      async () => (await follower.client.collection("deliveries").view("dlv-1"))?.attachments?.["p1"],
      (s) => seen.push(s),
    );
    server.statuses.set("p1", "available");
    await until(() => follower.events.some((e) => e.type === "attachment" && e.id === "p1"), 3000);
    await until(() => seen.at(-1) === "available");
    // The change was heard once, from the leader: the follower has no status loop of its own.
    expect(leader.events.filter((e) => e.type === "attachment")).toHaveLength(1);
    expect(follower.events.filter((e) => e.type === "attachment")).toHaveLength(1);
    const asked = server.asked.length;
    await leader.client.close(); // the follower takes over, and so does the asking
    await until(() => follower.client.status().leader);
    server.pages = [{ changes: [delivery("dlv-2", { p2: "pending" }, 2)], cursor: "c2", more: false }];
    server.statuses.set("p2", "refused");
    await follower.client.sync();
    await until(() => follower.events.some((e) => e.type === "attachment" && e.id === "p2" && e.status === "refused"), 3000);
    expect(server.asked.length).toBeGreaterThan(asked);
    await follower.client.close();
  });
});
