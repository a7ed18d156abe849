/**
 * Lone UTF-16 surrogates (text cut inside an emoji by `.slice()`) are refused at write time: the server
 * refuses a push holding one as `malformed_json`, whole, so a queued one would block the outbox for good.
 */
import { afterEach, describe, expect, it } from "vitest";

import { SyncClient } from "../src/client.js";
import type { Json } from "../src/types.js";
import { validateChange, wellFormed, WireError } from "../src/wire.js";
import { FakeServer, freshDb } from "./fake-server.js";

const CUT = "Leave at door \u{1F600}".slice(0, 15); // ends with a lone high surrogate

async function open(server = new FakeServer()) {
  return SyncClient.open({ url: "http://sync.test", token: "t0", dbName: freshDb(), fetch: server.fetch, transport: "http" });
}

function change(over: Record<string, unknown>): Record<string, unknown> {
  return {
    id: "c-1",
    n: 1,
    collection: "deliveries",
    entity: "dlv-1",
    hlc: [1, 0],
    context: {},
    ops: [{ op: "set", field: "note", value: "ok" }],
    ...over,
  };
}

function refusal(fn: () => unknown): WireError {
  try {
    fn();
  } catch (exc) {
    expect(exc).toBeInstanceOf(WireError);
    return exc as WireError;
  }
  throw new Error("no WireError");
}

describe("a lone surrogate", () => {
  it("in a value, at any depth, is refused by the write with a WireError, and nothing is queued", async () => {
    const server = new FakeServer();
    const client = await open(server);
    const d = client.collection("deliveries");
    const cases: [Record<string, Json>, string][] = [
      [{ depot: "dxb", note: CUT }, "$.ops[1].value"],
      [{ meta: { history: ["fine", { text: CUT }] } }, "$.ops[0].value.history[1].text"],
      [{ low: "\uDE00 first" }, "$.ops[0].value"],
    ];
    for (const [fields, path] of cases) {
      const err = await d.set("dlv-1", fields).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(WireError);
      expect(err).toMatchObject({ code: "invalid_request", path });
      expect((err as Error).message).toMatch(/not valid Unicode: a lone surrogate/);
    }
    await expect(d.append("dlv-1", "trail", { where: CUT })).rejects.toMatchObject({ path: "$.ops[0].value.where" });
    await expect(d.add("dlv-1", "scanned", CUT)).rejects.toMatchObject({ code: "invalid_request", path: "$.ops[0].value" });
    expect(await client.pendingCount()).toBe(0);

    // A whole emoji is fine, and a later write goes through as usual.
    await d.set("dlv-1", { note: "Leave at door \u{1F600}" });
    expect((await client.sync()).pushed).toBe(1);
    expect(server.log.map((c) => c.n)).toEqual([1]);
    await client.close();
  });

  it("in an object key inside a value is refused at that key", async () => {
    const client = await open();
    const err = await client
      .collection("deliveries")
      .set("dlv-1", { meta: { [CUT]: 1 } })
      .then(
        () => null,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(WireError);
    expect(err).toMatchObject({ code: "invalid_request", path: '$.ops[0].value["Leave at door \\ud83d"]' });
    expect(await client.pendingCount()).toBe(0);
    await client.close();
  });

  it("in a change id or deep in a value is refused by the strict validator", () => {
    expect(refusal(() => validateChange(change({ id: `id-${CUT}` })))).toMatchObject({ code: "invalid_request", path: "$.id" });
    expect(refusal(() => validateChange(change({ ops: [{ op: "set", field: "note", value: [1, CUT] }] })))).toMatchObject({
      path: "$.ops[0].value[1]",
    });
    expect(validateChange(change({ id: "id-\u{1F600}" })).id).toBe("id-\u{1F600}");
  });
});

describe("wellFormed", () => {
  const native = Object.getOwnPropertyDescriptor(String.prototype, "isWellFormed");
  afterEach(() => {
    if (native) Object.defineProperty(String.prototype, "isWellFormed", native);
  });

  const cases: [string, boolean][] = [
    ["", true],
    ["plain", true],
    ["\u{1F600}", true],
    ["a\u{1F600}b\u{1F680}", true],
    [CUT, false],
    ["\uDE00", false],
    ["x\uDE00y", false],
    ["\uD83D\uDE00\uDE00", false], // a pair, then a low one alone
    ["\uD83D\uD83D\uDE00", false], // a high one alone, then a pair
    ["\uDE00\uD83D", false],
  ];

  it("uses String.prototype.isWellFormed where there is one", () => {
    for (const [s, ok] of cases) expect(wellFormed(s)).toBe(ok);
  });

  it("falls back to a regular expression where there is none (Safari before 16.4)", () => {
    Object.defineProperty(String.prototype, "isWellFormed", { value: undefined, configurable: true, writable: true });
    expect((String.prototype as { isWellFormed?: unknown }).isWellFormed).toBeUndefined();
    for (const [s, ok] of cases) expect(wellFormed(s)).toBe(ok);
  });
});
