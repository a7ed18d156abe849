/**
 * Strict request validation and canonical encoding, matching the server's decoder
 * (`syncproto.messages`): a change the server would refuse as a whole request
 * (`invalid_request`, `unknown_op`) is refused here before it enters the outbox,
 * because such a change would block every push behind it.
 *
 * Responses are read leniently: unknown members are ignored, missing members take
 * the protocol's defaults (PROTOCOL §3).
 */
import type {
  Change,
  ConflictPage,
  ErrorResponse,
  EntityView,
  Eviction,
  FieldView,
  Json,
  Op,
  PullRequest,
  PullResponse,
  PushRequest,
  PushResponse,
  PushResult,
  SiblingView,
} from "./types.js";

/** A message that protocol v1 does not accept; `code` is the stable error code (PROTOCOL §6). */
export class WireError extends Error {
  constructor(
    readonly code: "malformed_json" | "invalid_request" | "unknown_op",
    readonly path: string,
    message: string,
  ) {
    super(`${message} - at \`${path}\``);
    this.name = "WireError";
  }
}

const ID = /^[A-Za-z0-9._:@-]+$/;
const FIELD = /^[A-Za-z_][A-Za-z0-9_.-]*$/;
/** Any text but NUL, which PostgreSQL text columns cannot hold. */
// eslint-disable-next-line no-control-regex -- NUL is exactly what the rule is about
const CHANGE_ID = /^[^\u0000]+$/;
const OP_MEMBERS: Record<Op["op"], readonly string[]> = {
  set: ["field", "value"],
  inc: ["field", "by"],
  add: ["field", "value"],
  remove: ["field", "value"],
  text: ["field", "update"],
  append: ["field", "value"],
  delete: [],
};

type Obj = Record<string, unknown>;

function invalid(path: string, message: string): never {
  throw new WireError("invalid_request", path, message);
}

function isObject(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function object(v: unknown, path: string): Obj {
  if (!isObject(v)) invalid(path, "Expected `object`");
  return v;
}

function strict(o: Obj, path: string, required: readonly string[], optional: readonly string[] = []): void {
  for (const key of required) if (!(key in o)) invalid(path, `Object missing required field \`${key}\``);
  for (const key of Object.keys(o)) {
    if (!required.includes(key) && !optional.includes(key)) invalid(path, `Object contains unknown field \`${key}\``);
  }
}

function int(v: unknown, path: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== "number" || !Number.isInteger(v)) invalid(path, "Expected `int`");
  if (v < min || v > max) invalid(path, `Expected \`int\` in ${min}..${max}`);
  return v;
}

function str(v: unknown, path: string, min = 0, max = Infinity, pattern?: RegExp): string {
  if (typeof v !== "string") invalid(path, "Expected `str`");
  const length = [...v].length;
  if (length < min || length > max) invalid(path, `Expected \`str\` of length ${min}..${max}`);
  if (pattern && !pattern.test(v)) invalid(path, `Expected \`str\` matching ${String(pattern)}`);
  return v;
}

export const id = (v: unknown, path: string): string => str(v, path, 1, 128, ID);
export const fieldName = (v: unknown, path: string): string => str(v, path, 1, 64, FIELD);

function scalar(v: unknown, path: string): void {
  if (!["string", "number", "boolean"].includes(typeof v)) invalid(path, "Expected `str | int | float | bool`");
}

function json(v: unknown, path: string): void {
  if (v === undefined || typeof v === "function" || typeof v === "symbol" || typeof v === "bigint") {
    invalid(path, "Expected a JSON value");
  }
  if (typeof v === "number" && !Number.isFinite(v)) invalid(path, "Expected a finite number");
}

function op(v: unknown, path: string): void {
  const o = object(v, path);
  const tag = o["op"];
  if (typeof tag !== "string" || !(tag in OP_MEMBERS)) {
    if (!("op" in o)) invalid(path, "Object missing required field `op`");
    throw new WireError("unknown_op", `${path}.op`, `Invalid value ${JSON.stringify(tag)}`);
  }
  strict(o, path, [...OP_MEMBERS[tag as Op["op"]], "op"]);
  if (tag === "delete") return;
  fieldName(o["field"], `${path}.field`);
  switch (tag) {
    case "inc":
      int(o["by"], `${path}.by`, Number.MIN_SAFE_INTEGER);
      break;
    case "add":
    case "remove":
      scalar(o["value"], `${path}.value`);
      break;
    case "text":
      str(o["update"], `${path}.update`);
      break;
    default:
      json(o["value"], `${path}.value`);
  }
}

/** Throws `WireError` unless `v` is a `Change` the server's strict decoder accepts. */
export function validateChange(v: unknown, path = "$"): Change {
  const o = object(v, path);
  strict(o, path, ["id", "n", "collection", "entity", "hlc", "context", "ops"]);
  str(o["id"], `${path}.id`, 1, 64, CHANGE_ID);
  int(o["n"], `${path}.n`, 1);
  id(o["collection"], `${path}.collection`);
  id(o["entity"], `${path}.entity`);
  const hlc = o["hlc"];
  if (!Array.isArray(hlc) || hlc.length !== 2) invalid(`${path}.hlc`, "Expected `array` of length 2");
  hlc.forEach((x, i) => int(x, `${path}.hlc[${i}]`, 0));
  const ctx = object(o["context"], `${path}.context`);
  for (const [r, n] of Object.entries(ctx)) {
    id(r, `${path}.context[...]`);
    int(n, `${path}.context[...]`, 0);
  }
  const ops = o["ops"];
  if (!Array.isArray(ops)) invalid(`${path}.ops`, "Expected `array`");
  ops.forEach((x, i) => op(x, `${path}.ops[${i}]`));
  return o as unknown as Change;
}

export function validatePushRequest(v: unknown): PushRequest {
  const o = object(v, "$");
  strict(o, "$", ["replica", "changes"]);
  id(o["replica"], "$.replica");
  const changes = o["changes"];
  if (!Array.isArray(changes)) invalid("$.changes", "Expected `array`");
  changes.forEach((c, i) => validateChange(c, `$.changes[${i}]`));
  return o as unknown as PushRequest;
}

export function validatePullRequest(v: unknown): PullRequest {
  const o = object(v, "$");
  strict(o, "$", [], ["cursor", "limit", "collections"]);
  const cursor = o["cursor"] ?? null;
  if (cursor !== null) str(cursor, "$.cursor");
  const limit = "limit" in o ? int(o["limit"], "$.limit", 1, 10_000) : 1000;
  let collections: string[] | null = null;
  if (o["collections"] != null) {
    const list = o["collections"];
    if (!Array.isArray(list)) invalid("$.collections", "Expected `array`");
    collections = list.map((c, i) => id(c, `$.collections[${i}]`));
  }
  return { cursor: cursor as string | null, limit, collections };
}

/** `JSON.parse` that reports `malformed_json` as the server does. */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (exc) {
    throw new WireError("malformed_json", "$", `not JSON: ${(exc as Error).message}`);
  }
}

// --- responses: lenient reading with defaults ------------------------------------

function text(v: unknown): string {
  return typeof v === "string" ? v : JSON.stringify(v ?? "");
}

function list<T>(v: unknown, each: (x: unknown) => T): T[] {
  return Array.isArray(v) ? v.map(each) : [];
}

function need(o: Obj, keys: readonly string[], what: string): void {
  for (const key of keys) {
    if (!(key in o)) throw new WireError("invalid_request", "$", `${what} lacks \`${key}\``);
  }
}

function readSibling(v: unknown): SiblingView {
  const o = object(v, "$");
  need(o, ["replica", "n", "hlc"], "a sibling");
  return { value: (o["value"] ?? null) as Json, replica: String(o["replica"]), n: Number(o["n"]), hlc: o["hlc"] as [number, number] };
}

function readField(v: unknown): FieldView {
  const o = object(v, "$");
  need(o, ["kind"], "a field view");
  const out: FieldView = { kind: o["kind"] as FieldView["kind"], value: (o["value"] ?? null) as Json };
  if (Array.isArray(o["siblings"])) out.siblings = o["siblings"].map(readSibling);
  if (typeof o["update"] === "string") out.update = o["update"];
  return out;
}

export function readEntityView(v: unknown): EntityView {
  const o = object(v, "$");
  need(o, ["collection", "entity", "seq", "vv", "deleted"], "an entity view");
  const fields: Record<string, FieldView> = {};
  for (const [name, f] of Object.entries(isObject(o["fields"]) ? o["fields"] : {})) fields[name] = readField(f);
  const view: EntityView = {
    collection: String(o["collection"]),
    entity: String(o["entity"]),
    seq: Number(o["seq"]),
    vv: { ...(object(o["vv"], "$.vv") as Record<string, number>) },
    deleted: Boolean(o["deleted"]),
    fields,
  };
  if (isObject(o["attachments"])) view.attachments = o["attachments"] as EntityView["attachments"] & object;
  return view;
}

function readEviction(v: unknown): Eviction {
  const o = object(v, "$");
  need(o, ["collection", "entity", "seq"], "an eviction");
  return { collection: String(o["collection"]), entity: String(o["entity"]), seq: Number(o["seq"]) };
}

export function readPullResponse(v: unknown): PullResponse {
  const o = object(v, "$");
  return {
    changes: list(o["changes"], readEntityView),
    cursor: typeof o["cursor"] === "string" ? o["cursor"] : null,
    more: o["more"] === true,
    reset: o["reset"] === true,
    evictions: list(o["evictions"], readEviction),
    protocol: typeof o["protocol"] === "number" ? o["protocol"] : 1,
  };
}

function readResult(v: unknown): PushResult {
  const o = object(v, "$");
  need(o, ["status", "id", "n"], "a push result");
  const base = { id: String(o["id"]), n: Number(o["n"]) };
  switch (o["status"]) {
    case "applied":
      return { status: "applied", ...base, seq: Number(o["seq"]) };
    case "duplicate":
      return { status: "duplicate", ...base };
    case "out_of_order":
      return { status: "out_of_order", ...base, expected: Number(o["expected"]) };
    case "rejected": {
      const e = object(o["error"], "$.error");
      return { status: "rejected", ...base, error: { code: String(e["code"]), message: text(e["message"]) } };
    }
    default:
      throw new WireError("invalid_request", "$.status", `unknown push result status ${JSON.stringify(o["status"])}`);
  }
}

export function readPushResponse(v: unknown): PushResponse {
  const o = object(v, "$");
  need(o, ["results"], "a push response");
  return { results: list(o["results"], readResult), protocol: typeof o["protocol"] === "number" ? o["protocol"] : 1 };
}

export function readErrorResponse(v: unknown): ErrorResponse {
  const e = object(object(v, "$")["error"], "$.error");
  return { error: { code: text(e["code"]), message: text(e["message"]) } };
}

export function readConflictPage(v: unknown): ConflictPage {
  const o = object(v, "$");
  need(o, ["conflicts"], "a conflict page");
  return { conflicts: o["conflicts"] as ConflictPage["conflicts"], next: typeof o["next"] === "string" ? o["next"] : null };
}

/** Members with their protocol defaults spelled out, in the order the Python encoder writes them. */
export function canonicalPullRequest(r: PullRequest): PullRequest {
  return { cursor: r.cursor, limit: r.limit, collections: r.collections };
}

/** An `EntityView` as the server encodes it: empty `fields` and absent `siblings`/`update` left out. */
export function canonicalEntityView(v: EntityView): Record<string, unknown> {
  const out: Record<string, unknown> = { collection: v.collection, entity: v.entity, seq: v.seq, vv: v.vv, deleted: v.deleted };
  if (Object.keys(v.fields).length) out["fields"] = v.fields;
  if (v.attachments) out["attachments"] = v.attachments;
  return out;
}
