/** The golden vectors shared with the Python SDK: merge cases and wire messages (protocol/vectors/). */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

import { readAttachmentStatusResponse } from "../src/attachments-ref.js";
import { applyPending } from "../src/optimistic.js";
import { Collection, type CollectionSpec } from "../src/schema.js";
import * as text from "../src/text.js";
import { PROTOCOL_VERSION, type Change, type EntityView, type FieldView } from "../src/types.js";
import {
  canonicalEntityView,
  canonicalPullRequest,
  encodeWsClientMessage,
  parseJson,
  readConflictPage,
  readErrorResponse,
  readPullResponse,
  readPushResponse,
  validateChange,
  validatePullRequest,
  validatePushRequest,
  validateWsClientMessage,
  WireError,
  readWsServerMessage,
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
const DECODED = new Set([
  "PushRequest",
  "Change",
  "PullRequest",
  "PullResponse",
  "PushResponse",
  "ConflictPage",
  "ErrorResponse",
  "AttachmentStatusResponse",
  "WsClientMessage",
  "WsServerMessage",
]);

/**
 * Must-reject vectors that only the server can judge: the message is well-formed, and the
 * server refuses it by policy, not by decoding. These are checked to be valid shapes that
 * carry what the refusal is about; every other must-reject vector must fail decoding.
 */
const SERVER_POLICY: Record<string, (decoded: unknown) => void> = {
  // A well-formed hello whose versions share none with the server (which speaks v1, as this
  // SDK does): negotiation refuses it with version_unsupported and close code 4426.
  "ws-hello-no-shared-version": (decoded) => {
    expect(decoded).toMatchObject({ type: "hello" });
    expect((decoded as { versions: number[] }).versions).not.toContain(PROTOCOL_VERSION);
  },
};

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
    case "AttachmentStatusResponse":
      return readAttachmentStatusResponse(value);
    case "WsClientMessage":
      // What this SDK sends: validated, then encoded as it goes on the socket.
      return parseJson(encodeWsClientMessage(validateWsClientMessage(value)));
    case "WsServerMessage": {
      const m = readWsServerMessage(value);
      return m.type === "changes" ? { ...m, changes: m.changes.map(canonicalEntityView) } : m;
    }
    default:
      throw new Error(`no decoder for ${message}`);
  }
}

describe("message vectors", () => {
  const valid = load("valid").filter(([, v]) => DECODED.has(v["message"] as string));
  const rejectAll = load("reject").filter(([, v]) => DECODED.has(v["message"] as string));
  const reject = rejectAll.filter(([name]) => !(name in SERVER_POLICY));
  const policy = rejectAll.filter(([name]) => name in SERVER_POLICY);
  it("cover what the SDK sends and reads", () => {
    expect(new Set(valid.map(([, v]) => v["message"]))).toEqual(DECODED);
    expect(reject.length).toBeGreaterThanOrEqual(20);
    expect(policy.map(([name]) => name)).toEqual(Object.keys(SERVER_POLICY).sort());
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
    if ("path" in v) expect((error as WireError).path).toBe(v["path"]);
  });

  it.each(policy)("reject/%s is well-formed: only the server's policy refuses it", (name, v) => {
    const decoded = reencode(v["message"] as string, parseJson(JSON.stringify(v["body"])));
    SERVER_POLICY[name]!(decoded);
  });
});
