/** The golden vectors shared with the Python SDK: merge cases and wire messages (protocol/vectors/). */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

import { applyPending } from "../src/optimistic.js";
import { Collection, type CollectionSpec } from "../src/schema.js";
import * as text from "../src/text.js";
import type { Change, EntityView, FieldView } from "../src/types.js";
import {
  canonicalEntityView,
  canonicalPullRequest,
  parseJson,
  readConflictPage,
  readErrorResponse,
  readPullResponse,
  readPushResponse,
  validateChange,
  validatePullRequest,
  validatePushRequest,
  WireError,
} from "../src/wire.js";

const VECTORS = join(import.meta.dirname, "..", "..", "..", "protocol", "vectors");

function load(dir: string): [string, Record<string, unknown>][] {
  return readdirSync(join(VECTORS, dir))
    .filter((f) => f.endsWith(".json"))
    .sort()
    .map((f) => [f.replace(/\.json$/, ""), JSON.parse(readFileSync(join(VECTORS, dir, f), "utf8")) as Record<string, unknown>]);
}

/** Text `update`s are checked to hold `value`, then dropped: two Yjs encoders may order one state differently. */
function comparable(view: EntityView): EntityView {
  const fields: Record<string, FieldView> = {};
  for (const [name, f] of Object.entries(view.fields)) {
    if (f.kind === "text" && f.update !== undefined) {
      expect(text.value(f.update)).toBe(f.value);
      const { update: _update, ...rest } = f;
      fields[name] = rest;
    } else {
      fields[name] = f;
    }
  }
  return { ...view, fields };
}

describe("merge vectors", () => {
  const vectors = load("merge");
  it("exist", () => {
    expect(vectors.length).toBeGreaterThanOrEqual(15);
  });
  it.each(vectors)("%s", (_name, v) => {
    const { name, ...spec } = v["collection"] as CollectionSpec & { name: string };
    const collection = new Collection(name, spec);
    let view = (v["state"] as EntityView | null) ?? undefined;
    for (const change of v["changes"] as Change[]) view = applyPending(view, change, v["replica"] as string, collection);
    const expected = { ...(v["expected"] as EntityView) };
    expect(comparable(view!)).toEqual(comparable(expected));
  });
});

/** The messages this SDK sends or reads; vectors of other messages (an attachment reference is an opaque register value here) are not its business. */
const DECODED = new Set(["PushRequest", "Change", "PullRequest", "PullResponse", "PushResponse", "ConflictPage", "ErrorResponse"]);

function reencode(message: string, value: unknown): unknown {
  switch (message) {
    case "PushRequest":
      return validatePushRequest(value);
    case "Change":
      return validateChange(value);
    case "PullRequest":
      return canonicalPullRequest(validatePullRequest(value));
    case "PullResponse": {
      const r = readPullResponse(value);
      return { ...r, changes: r.changes.map(canonicalEntityView) };
    }
    case "PushResponse":
      return readPushResponse(value);
    case "ConflictPage":
      return readConflictPage(value);
    case "ErrorResponse":
      return readErrorResponse(value);
    default:
      throw new Error(`no decoder for ${message}`);
  }
}

describe("message vectors", () => {
  const valid = load("valid").filter(([, v]) => DECODED.has(v["message"] as string));
  const reject = load("reject").filter(([, v]) => DECODED.has(v["message"] as string));
  it("cover what the SDK sends and reads", () => {
    expect(new Set(valid.map(([, v]) => v["message"]))).toEqual(DECODED);
    expect(reject.length).toBeGreaterThanOrEqual(20);
  });

  it.each(valid)("valid/%s decodes and re-encodes", (_name, v) => {
    const decoded = reencode(v["message"] as string, parseJson(JSON.stringify(v["body"])));
    expect(JSON.parse(JSON.stringify(decoded))).toEqual(v["canonical"] ?? v["body"]);
    // Every text update in a valid vector is a Yjs update this SDK can read.
    const updates = JSON.stringify(v["body"]).matchAll(/"update":\s*"([^"]*)"/g);
    for (const [, update] of updates) expect(() => text.applyUpdate(undefined, update!)).not.toThrow();
  });

  it.each(reject)("reject/%s is refused with its code", (_name, v) => {
    const raw = "raw" in v ? (v["raw"] as string) : JSON.stringify(v["body"]);
    let error: unknown = null;
    try {
      reencode(v["message"] as string, parseJson(raw));
    } catch (exc) {
      error = exc;
    }
    expect(error).toBeInstanceOf(WireError);
    expect((error as WireError).code).toBe(v["error"]);
  });
});
