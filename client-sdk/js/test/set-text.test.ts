/**
 * `setText(entity, field, value)`: an input box hands over its whole new value and the SDK makes the
 * smallest edit against the text as it is now, so a keystroke made after a remote edit was pulled lands
 * where the user typed it (a position computed against an older text would not).
 */
import { describe, expect, it } from "vitest";

import { SyncClient } from "../src/client.js";
import { diff, merge } from "../src/text.js";
import type { EntityView } from "../src/types.js";
import { FakeServer, freshDb } from "./fake-server.js";

const SCHEMA = { deliveries: { fields: { notes: { kind: "text" as const } } } };

/** Two devices of one driver on one server that merges text as the real one does (pull pages built by hand). */
async function pair() {
  const server = new FakeServer();
  const open = () =>
    SyncClient.open({ url: "http://sync.test", token: "t0", dbName: freshDb(), fetch: server.fetch, transport: "http", schema: SCHEMA });
  return { server, phone: await open(), tablet: await open() };
}

describe("text.diff", () => {
  it("is the smallest single edit, in code points", () => {
    expect(diff("Gate 4521", "Gate 4521")).toBeNull();
    expect(diff("", "abc")).toEqual([0, 0, "abc"]);
    expect(diff("Gate 4521", "Gate 4521!")).toEqual([9, 0, "!"]);
    expect(diff("Gate 4521", "Gate 21")).toEqual([5, 2, ""]);
    expect(diff("a\u{1F600}b", "a\u{1F680}b")).toEqual([1, 1, "\u{1F680}"]); // an emoji is one position
    expect(diff("aaa", "aaaa")).toEqual([3, 0, "a"]);
    expect(diff("\u{1F600}\u{1F600}", "\u{1F600}x\u{1F600}")).toEqual([1, 0, "x"]);
  });
});

describe("text.merge", () => {
  it("keeps a remote edit made while a box was being typed into", () => {
    expect(merge("Gate 4521", "Gate 4521!", "Call first. Gate 4521")).toBe("Call first. Gate 4521!");
    expect(merge("Gate 4521", "Gate 21", "Gate 4521 (blue door)")).toBe("Gate 21 (blue door)");
    expect(merge("ab", "aXb", "aYb")).toBe("aYXb"); // the same spot: both, theirs first
    expect(merge("abc", "abc", "xyz")).toBe("xyz");
    expect(merge("abc", "abcd", "abc")).toBe("abcd");
    expect(merge("abc", "abcd", "abcd")).toBe("abcd"); // the same edit once, not twice
    expect(merge("a\u{1F600}b", "a\u{1F600}!b", "\u{1F680}a\u{1F600}b")).toBe("\u{1F680}a\u{1F600}!b");
    expect(merge("hello world", "hello", "hello brave world")).toBe("hellobrave "); // overlapping: both deletions, both insertions
  });
});

describe("setText", () => {
  it("edits the current text, pulled remote edits and pending edits included, with the smallest splice", async () => {
    const { server, phone, tablet } = await pair();
    const notes = phone.collection("deliveries");
    await notes.editText("dlv-1", "notes", 0, 0, "Gate 4521");
    const view = await notes.view("dlv-1"); // the server's state once it has the change
    // The tablet pulls it (the fake server serves it as the real one would: the whole Yjs state).
    const page = (seq: number, vv: Record<string, number>, fields: EntityView["fields"]): EntityView => ({
      collection: "deliveries",
      entity: "dlv-1",
      seq,
      vv,
      deleted: false,
      fields,
    });
    server.pages = [{ changes: [page(1, { [phone.replicaId]: 1 }, view!.fields)], cursor: "c1", more: false }];
    await phone.sync();
    server.pages = [{ changes: [page(1, { [phone.replicaId]: 1 }, view!.fields)], cursor: "c1", more: false }];
    await tablet.sync();
    expect(await tablet.collection("deliveries").get("dlv-1")).toEqual({ notes: "Gate 4521" });

    // The tablet prepends; the phone pulls that while its notes box still shows "Gate 4521".
    await tablet.collection("deliveries").setText("dlv-1", "notes", "Call first. Gate 4521");
    const tabletView = await tablet.collection("deliveries").view("dlv-1");
    server.pages = [
      { changes: [page(2, { [phone.replicaId]: 1, [tablet.replicaId]: 1 }, tabletView!.fields)], cursor: "c2", more: false },
    ];
    await phone.sync();
    expect((await notes.get("dlv-1"))?.notes).toBe("Call first. Gate 4521");

    // The box took the remote edit, then the driver typed "!" at the end: the whole value goes in.
    const change = await notes.setText("dlv-1", "notes", "Call first. Gate 4521!");
    expect(change).not.toBeNull();
    expect(change!.ops).toHaveLength(1);
    expect((await notes.get("dlv-1"))?.notes).toBe("Call first. Gate 4521!");

    // A pending edit is part of the text the next one is made against.
    await notes.setText("dlv-1", "notes", "Call first! Gate 4521!");
    expect((await notes.get("dlv-1"))?.notes).toBe("Call first! Gate 4521!");

    await phone.close();
    await tablet.close();
  });

  it("with `basis`, makes the box's edit on the text as it is now, keeping a remote edit the box has not shown", async () => {
    const { server, phone, tablet } = await pair();
    const page = (seq: number, vv: Record<string, number>, fields: EntityView["fields"]): EntityView => ({
      collection: "deliveries",
      entity: "dlv-2",
      seq,
      vv,
      deleted: false,
      fields,
    });
    const d = phone.collection("deliveries");
    await d.setText("dlv-2", "notes", "Gate 4521");
    const first = await d.view("dlv-2");
    server.pages = [{ changes: [page(1, { [phone.replicaId]: 1 }, first!.fields)], cursor: "c1", more: false }];
    await phone.sync();
    server.pages = [{ changes: [page(1, { [phone.replicaId]: 1 }, first!.fields)], cursor: "c1", more: false }];
    await tablet.sync();
    await tablet.collection("deliveries").setText("dlv-2", "notes", "Gate 4521 (blue door)");
    const second = await tablet.collection("deliveries").view("dlv-2");
    server.pages = [{ changes: [page(2, { [phone.replicaId]: 1, [tablet.replicaId]: 1 }, second!.fields)], cursor: "c2", more: false }];
    await phone.sync();
    // The phone's box still shows "Gate 4521"; the driver deletes "Gate ".
    await d.setText("dlv-2", "notes", "4521", { basis: "Gate 4521" });
    expect((await d.get("dlv-2"))?.notes).toBe("4521 (blue door)");
    // The same value without `basis` makes the text read exactly that.
    await d.setText("dlv-2", "notes", "4521");
    expect((await d.get("dlv-2"))?.notes).toBe("4521");
    await phone.close();
    await tablet.close();
  });

  it("queues nothing when the text already reads the value, and creates the field when there is none", async () => {
    const { phone, tablet } = await pair();
    const d = phone.collection("deliveries");
    expect(await d.setText("dlv-1", "notes", "")).toBeNull();
    expect(await phone.pendingCount()).toBe(0);
    expect(await d.setText("dlv-1", "notes", "Leave at door \u{1F6AA}")).not.toBeNull();
    expect(await d.setText("dlv-1", "notes", "Leave at door \u{1F6AA}")).toBeNull();
    expect(await phone.pendingCount()).toBe(1);
    expect((await d.get("dlv-1"))?.notes).toBe("Leave at door \u{1F6AA}");
    await d.set("dlv-2", { status: "x" });
    await expect(d.setText("dlv-2", "status", "y")).rejects.toThrow(TypeError);
    await phone.close();
    await tablet.close();
  });
});
