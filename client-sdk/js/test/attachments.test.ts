/** Attachments: durable attach, tus upload with resume, refusals that block nothing, verified fetch, bounded cache. */
import { createHash } from "node:crypto";

import { openDB } from "idb";
import { describe, expect, it } from "vitest";

import { asAttachmentRef } from "../src/attachments-ref.js";
import { SyncClient } from "../src/client.js";
import { mergeDelta } from "../src/optimistic.js";
import type { SyncEvent } from "../src/events.js";
import { freshDb } from "./fake-server.js";
import { FakeTus } from "./fake-tus.js";

function bytes(n: number, seed = 1): Uint8Array<ArrayBuffer> {
  return Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) % 251);
}

async function open(server: FakeTus, dbName = freshDb(), cacheBytes?: number): Promise<SyncClient> {
  return SyncClient.open({
    url: "http://sync.test",
    token: "t0",
    dbName,
    fetch: server.fetch,
    transport: "http",
    attachments: { chunkSize: 1000, ...(cacheBytes !== undefined ? { cacheBytes } : {}) },
  });
}

function events(client: SyncClient): SyncEvent[] {
  const seen: SyncEvent[] = [];
  client.subscribe((e) => seen.push(e));
  return seen;
}

describe("attach", () => {
  it("commits the Blob and the change holding its reference before it resolves", async () => {
    const dbName = freshDb();
    const client = await open(new FakeTus(), dbName);
    const data = bytes(2500);
    const ref = await client.attachments.attach("deliveries", "dlv-1", "pod_photo", new Blob([data]), { mediaType: "Image/JPEG", name: "door.jpg" });
    expect(ref).toEqual({
      id: ref.id,
      size: 2500,
      sha256: createHash("sha256").update(data).digest("hex"),
      media_type: "image/jpeg",
      name: "door.jpg",
    });
    // Another connection sees both: the bytes and the queued change.
    const other = await openDB(dbName);
    const upload = (await other.get("uploads", ref.id)) as { blob: Blob; state: string };
    expect(new Uint8Array(await upload.blob.arrayBuffer())).toEqual(data);
    expect(upload.state).toBe("queued");
    const [row] = (await other.getAll("outbox")) as { change: { ops: { field: string; value: unknown }[] } }[];
    expect(row?.change.ops).toEqual([{ op: "set", field: "pod_photo", value: { $attachment: ref } }]);
    other.close();
    expect(asAttachmentRef((await client.collection("deliveries").get("dlv-1"))?.pod_photo)).toEqual(ref);
    await client.close();
  });

  it("refuses a media type that is not type/subtype, and writes nothing", async () => {
    const client = await open(new FakeTus());
    await expect(client.attachments.attach("deliveries", "dlv-1", "pod_photo", new Blob(["x"]), { mediaType: "jpeg" })).rejects.toThrow(
      TypeError,
    );
    expect(await client.pendingCount()).toBe(0);
    expect(await client.attachments.list()).toEqual([]);
    await client.close();
  });
});

describe("upload", () => {
  it("sends the bytes with tus in checksummed chunks, reports progress, and moves the copy to the cache", async () => {
    const server = new FakeTus();
    const client = await open(server);
    const seen = events(client);
    const data = bytes(2500);
    const ref = await client.attachments.attach("deliveries", "dlv-1", "pod_photo", new Blob([data]), { mediaType: "image/png" });
    const [done] = await client.attachments.uploadPending();
    expect(done).toMatchObject({ id: ref.id, state: "uploaded", sent: 2500, total: 2500 });
    expect(server.uploads.get(ref.id)?.bytes).toEqual(data);
    // The first chunk rides on the creation (creation-with-upload, checksummed like a PATCH).
    expect(server.requests).toEqual([
      "POST /v1/attachments/uploads",
      ...Array<string>(2).fill(`PATCH /v1/attachments/uploads/${ref.id}`),
    ]);
    const progress = seen.filter((e) => e.type === "attachment_progress").map((e) => [e.state, e.sent]);
    expect(progress).toEqual([["queued", 0], ["uploading", 0], ["uploading", 1000], ["uploading", 2000], ["uploading", 2500], ["uploaded", 2500]]);
    // The local copy now serves reads from the cache, without a download.
    expect(new Uint8Array(await (await client.attachments.fetch(ref)).arrayBuffer())).toEqual(data);
    expect(server.requests.filter((r) => r.startsWith("GET"))).toEqual([]);
    await client.close();
  });

  it("sends a file of one chunk (a signature) in the creating request alone", async () => {
    const server = new FakeTus();
    const client = await open(server);
    const data = bytes(700, 3);
    const ref = await client.attachments.attach("deliveries", "dlv-1", "pod_signature", new Blob([data]), { mediaType: "image/png" });
    const [done] = await client.attachments.uploadPending();
    expect(done).toMatchObject({ id: ref.id, state: "uploaded", sent: 700, total: 700 });
    expect(server.requests).toEqual(["POST /v1/attachments/uploads"]);
    expect(server.uploads.get(ref.id)?.bytes).toEqual(data);
    await client.close();
  });

  it("resumes from the server's offset after a cut connection and a reopened database, sending no byte twice", async () => {
    const server = new FakeTus();
    const dbName = freshDb();
    let client = await open(server, dbName);
    const data = bytes(3500, 7);
    const ref = await client.attachments.attach("deliveries", "dlv-1", "pod_signature", new Blob([data]), { mediaType: "image/png" });
    server.cutAfterChunk = 1; // the second PATCH reaches the server, its answer is lost
    const seen = events(client);
    await expect(client.attachments.uploadPending()).rejects.toThrow();
    expect(await client.attachments.status(ref.id)).toMatchObject({ state: "queued" });
    expect(seen.at(-1)).toMatchObject({ type: "attachment_progress", id: ref.id, state: "queued", sent: 1000 }); // the answer to the second chunk was lost
    await client.close();

    client = await open(server, dbName);
    server.requests.length = 0;
    await client.attachments.uploadPending();
    expect(server.requests[0]).toBe(`HEAD /v1/attachments/uploads/${ref.id}`); // the kept upload URL, not a new upload
    expect(server.requests).not.toContain("POST /v1/attachments/uploads");
    expect(server.patched.get(ref.id)).toBe(3500);
    expect(server.uploads.get(ref.id)?.bytes).toEqual(data);
    expect(await client.attachments.status(ref.id)).toMatchObject({ state: "uploaded", sent: 3500 });
    await client.close();
  });

  it("is done by one tab at a time: two tabs flushing at once send each file once", async () => {
    const server = new FakeTus();
    const dbName = freshDb();
    const tabA = await open(server, dbName);
    const tabB = await open(server, dbName);
    const one = await tabA.attachments.attach("deliveries", "dlv-1", "pod_photo", new Blob([bytes(2200)]), { mediaType: "image/jpeg" });
    const two = await tabB.attachments.attach("deliveries", "dlv-2", "pod_photo", new Blob([bytes(1200)]), { mediaType: "image/jpeg" });
    const [a, b] = await Promise.all([tabA.attachments.uploadPending(), tabB.attachments.uploadPending()]);
    expect([...a, ...b].map((s) => s.id).sort()).toEqual([one.id, two.id].sort()); // each file by one of them
    expect(server.requests.filter((r) => r.startsWith("POST"))).toHaveLength(2);
    expect(server.patched.get(one.id)).toBe(2200);
    expect(server.patched.get(two.id)).toBe(1200);
    await tabA.close();
    await tabB.close();
  });

  it("marks a refused file with its code, reports it once, and still uploads the next one", async () => {
    const server = new FakeTus();
    const client = await open(server);
    const seen = events(client);
    const bad = await client.attachments.attach("deliveries", "dlv-1", "pod_photo", new Blob(["exe"]), { mediaType: "application/x-refused" });
    const good = await client.attachments.attach("deliveries", "dlv-1", "pod_signature", new Blob([bytes(10)]), { mediaType: "image/png" });
    const states = await client.attachments.uploadPending();
    expect(states.map((s) => [s.id, s.state, s.code])).toEqual([
      [bad.id, "refused", "media_type_not_allowed"],
      [good.id, "uploaded", null],
    ]);
    expect(seen.filter((e) => e.type === "attachment_rejected")).toEqual([
      { type: "attachment_rejected", id: bad.id, collection: "deliveries", entity: "dlv-1", field: "pod_photo", code: "media_type_not_allowed", message: "not allowed here" },
    ]);
    // Never retried: another pass sends nothing.
    server.requests.length = 0;
    expect(await client.attachments.uploadPending()).toEqual([]);
    expect(server.requests).toEqual([]);
    expect((await client.attachments.refused()).map((s) => s.id)).toEqual([bad.id]);
    await client.close();
  });

  it("treats a hash mismatch found by the server as a refusal", async () => {
    const server = new FakeTus();
    const client = await open(server);
    const ref = await client.attachments.attach("deliveries", "dlv-1", "pod_photo", new Blob([bytes(20)]), { mediaType: "image/png" });
    server.uploads.set(ref.id, { length: 20, sha256: "0".repeat(64), mediaType: "image/png", bytes: new Uint8Array(20), offset: 0 });
    await client.attachments.uploadPending();
    expect(await client.attachments.status(ref.id)).toMatchObject({ state: "refused", code: "attachment_hash_mismatch" });
    await client.close();
  });

  it("uploads in the background in the leader tab, without holding back the change queue", async () => {
    const server = new FakeTus();
    const client = await open(server);
    await client.start();
    const ref = await client.attachments.attach("deliveries", "dlv-1", "pod_photo", new Blob([bytes(1500)]), { mediaType: "image/jpeg" });
    await client.sync();
    expect(server.api.log.map((c) => c.ops)).toEqual([[{ op: "set", field: "pod_photo", value: { $attachment: ref } }]]);
    for (let i = 0; i < 100 && (await client.attachments.status(ref.id))?.state !== "uploaded"; i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(await client.attachments.status(ref.id)).toMatchObject({ state: "uploaded" });
    await client.close();
  });
});

describe("fetch", () => {
  async function uploadedElsewhere(server: FakeTus, data: Uint8Array<ArrayBuffer>) {
    const writer = await open(server);
    const ref = await writer.attachments.attach("deliveries", "dlv-9", "pod_photo", new Blob([data]), { mediaType: "image/png" });
    await writer.attachments.uploadPending();
    await writer.close();
    return ref;
  }

  it("downloads with the bearer token, checks SHA-256, and serves the cache afterwards", async () => {
    const server = new FakeTus();
    const data = bytes(1200, 3);
    const ref = await uploadedElsewhere(server, data);
    const reader = await open(server);
    expect(new Uint8Array(await (await reader.attachments.fetch({ $attachment: { ...ref } })).arrayBuffer())).toEqual(data);
    expect(new Uint8Array(await (await reader.attachments.fetch(ref)).arrayBuffer())).toEqual(data);
    expect(server.requests.filter((r) => r.startsWith("GET"))).toHaveLength(1);
    await reader.close();
  });

  it("rejects damaged bytes with data_integrity and caches nothing", async () => {
    const server = new FakeTus();
    const ref = await uploadedElsewhere(server, bytes(100));
    const reader = await open(server);
    server.tamper = true;
    await expect(reader.attachments.fetch(ref)).rejects.toMatchObject({ code: "data_integrity" });
    server.tamper = false;
    await expect(reader.attachments.fetch(ref)).resolves.toBeInstanceOf(Blob);
    await reader.close();
  });

  it("keeps the cache under its size, evicting the least recently used file", async () => {
    const server = new FakeTus();
    const a = await uploadedElsewhere(server, bytes(600, 1));
    const b = await uploadedElsewhere(server, bytes(600, 2));
    const c = await uploadedElsewhere(server, bytes(600, 3));
    const reader = await open(server, freshDb(), 1300);
    await reader.attachments.fetch(a);
    await new Promise((r) => setTimeout(r, 5));
    await reader.attachments.fetch(b);
    await new Promise((r) => setTimeout(r, 5));
    await reader.attachments.fetch(a); // a is now more recent than b
    await new Promise((r) => setTimeout(r, 5));
    await reader.attachments.fetch(c); // over 1300 bytes: b goes
    const gets = () => server.requests.filter((r) => r.startsWith("GET")).length;
    const before = gets();
    await reader.attachments.fetch(a);
    await reader.attachments.fetch(c);
    expect(gets()).toBe(before);
    await reader.attachments.fetch(b);
    expect(gets()).toBe(before + 1);
    await reader.close();
  });

  it("is 404 not_found while the server has no verified bytes", async () => {
    const server = new FakeTus();
    const reader = await open(server);
    const ref = { id: "nope", size: 1, sha256: "a".repeat(64), media_type: "image/png" };
    await expect(reader.attachments.fetch(ref)).rejects.toMatchObject({ status: 404, code: "not_found" });
    await reader.close();
  });
});

describe("what stays on the device", () => {
  type Stored = { id: string; state: string; blob: Blob | null; uploadUrl: string | null };
  async function stored(dbName: string): Promise<Stored[]> {
    const db = await openDB(dbName);
    const rows = (await db.getAll("uploads")) as Stored[];
    db.close();
    return rows;
  }

  it("an uploaded file keeps no bytes and no upload URL in `uploads`, and still fetches once the cache let it go", async () => {
    const server = new FakeTus();
    const dbName = freshDb();
    const client = await open(server, dbName, 1000); // the cache holds one of them
    const data = bytes(800, 5);
    const ref = await client.attachments.attach("deliveries", "dlv-1", "pod_photo", new Blob([data]), { mediaType: "image/png" });
    const other = await client.attachments.attach("deliveries", "dlv-2", "pod_photo", new Blob([bytes(800, 6)]), { mediaType: "image/png" });
    await client.attachments.uploadPending();
    const rows = await stored(dbName);
    expect(rows.map((r) => [r.id, r.state, r.blob, r.uploadUrl])).toEqual([
      [ref.id, "uploaded", null, null],
      [other.id, "uploaded", null, null],
    ].sort((a, b) => (a[0]! < b[0]! ? -1 : 1)));
    expect(await client.attachments.status(ref.id)).toMatchObject({ state: "uploaded", sent: 800, total: 800 });
    // The second upload pushed the first out of the cache: it comes from the server, checked.
    const gets = server.requests.filter((r) => r.startsWith("GET")).length;
    expect(new Uint8Array(await (await client.attachments.fetch(ref)).arrayBuffer())).toEqual(data);
    expect(server.requests.filter((r) => r.startsWith("GET")).length).toBe(gets + 1);
    // Discarded, its status goes; the bytes are still the server's (and now the cache's).
    expect(await client.attachments.discard(ref.id)).toBe(true);
    expect(await client.attachments.status(ref.id)).toBeUndefined();
    expect(new Uint8Array(await (await client.attachments.fetch(ref)).arrayBuffer())).toEqual(data);
    expect((await stored(dbName)).map((r) => r.id)).toEqual([other.id]);
    await client.close();
  });

  it("a refused file keeps its bytes until `discard(id)`, which drops them; a file still to be sent cannot be discarded", async () => {
    const server = new FakeTus();
    const dbName = freshDb();
    const client = await open(server, dbName);
    const refused = await client.attachments.attach("deliveries", "dlv-1", "pod_video", new Blob([bytes(20_000)]), { mediaType: server.refuseMediaType });
    await client.attachments.uploadPending();
    expect(await client.attachments.status(refused.id)).toMatchObject({ state: "refused", code: "media_type_not_allowed" });
    expect((await stored(dbName)).find((r) => r.id === refused.id)?.blob?.size).toBe(20_000);

    const queued = await client.attachments.attach("deliveries", "dlv-2", "pod_photo", new Blob([bytes(10)]), { mediaType: "image/png" });
    await expect(client.attachments.discard(queued.id)).rejects.toThrow(/queued/);
    expect(await client.attachments.status(queued.id)).toMatchObject({ state: "queued" });

    expect(await client.attachments.discard(refused.id)).toBe(true);
    expect(await client.attachments.discard(refused.id)).toBe(false); // nothing left to forget
    expect(await client.attachments.refused()).toEqual([]);
    expect(await client.attachments.status(refused.id)).toBeUndefined();
    const rows = await stored(dbName);
    expect(rows.map((r) => r.id)).toEqual([queued.id]);
    expect(rows.reduce((sum, r) => sum + (r.state === "refused" ? (r.blob?.size ?? 0) : 0), 0)).toBe(0);
    await expect(client.attachments.fetch(refused)).rejects.toMatchObject({ status: 404, code: "not_found" });
    await client.close();
  });
});

describe("pulled views", () => {
  it("keep the server's status of attachments a later delta does not mention, and take the new ones", () => {
    const base = { collection: "deliveries", entity: "dlv-1", vv: {}, deleted: false };
    const ref = (id: string) => ({ kind: "register" as const, value: { $attachment: { id } } });
    const first = { ...base, seq: 1, fields: { pod_photo: ref("a"), pod_signature: ref("b") }, attachments: { a: "pending" as const, b: "pending" as const } };
    const later = { ...base, seq: 2, fields: { pod_photo: ref("a") }, attachments: { a: "available" as const } };
    expect(mergeDelta(first, later).attachments).toEqual({ a: "available", b: "pending" });
    const plain = { ...base, seq: 3, fields: { status: { kind: "register" as const, value: "delivered" } } };
    expect(mergeDelta(first, plain).attachments).toEqual({ a: "pending", b: "pending" });
  });
});
