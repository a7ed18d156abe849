/**
 * Strict request validation and canonical encoding, matching the server's decoder
 * (`syncproto.messages`): a change the server would refuse as a whole request
 * (`invalid_request`, `unknown_op`) is refused here before it enters the outbox,
 * because such a change would block every push behind it.
 *
 * Responses are read leniently: unknown members are ignored, missing members take
 * the protocol's defaults (PROTOCOL §3).
 *
 * WebSocket messages (PROTOCOL §9.6) go through `validateWsClientMessage` /
 * `encodeWsClientMessage` on the way out and `readWsServerMessage` on the way in:
 * both check the `type` tag, the required members and their types; client messages
 * refuse unknown members where the server does (all but `hello`, `ping`, `pong`),
 * server messages ignore them.
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
  Unavailable,
  WsChanges,
  WsClientMessage,
  WsEncoding,
  WsServerMessage,
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

function present(o: Obj, path: string, required: readonly string[]): void {
  for (const key of required) if (!(key in o)) invalid(path, `Object missing required field \`${key}\``);
}

function strict(o: Obj, path: string, required: readonly string[], optional: readonly string[] = []): void {
  present(o, path, required);
  for (const key of Object.keys(o)) {
    if (!required.includes(key) && !optional.includes(key)) invalid(path, `Object contains unknown field \`${key}\``);
  }
}

function int(v: unknown, path: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== "number" || !Number.isInteger(v)) invalid(path, "Expected `int`");
  if (v < min || v > max) invalid(path, `Expected \`int\` in ${min}..${max}`);
  return v;
}

/**
 * A lone UTF-16 surrogate (text cut inside an emoji by `.slice()`): a high one not followed by a low
 * one, or a low one not preceded by a high one. No lookbehind: Safari before 16.4 cannot parse it.
 */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?:^|[^\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * True unless `s` holds a lone surrogate. JSON.stringify escapes one as `\udXXX`, which the server's
 * decoder refuses as `malformed_json` for the whole push, so it must never enter the outbox.
 */
export function wellFormed(s: string): boolean {
  const native = (s as { isWellFormed?: () => boolean }).isWellFormed;
  return typeof native === "function" ? native.call(s) : !LONE_SURROGATE.test(s);
}

function unicode(v: string, path: string): void {
  if (!wellFormed(v)) invalid(path, "text is not valid Unicode: a lone surrogate (a string cut inside a character?)");
}

function str(v: unknown, path: string, min = 0, max = Infinity, pattern?: RegExp): string {
  if (typeof v !== "string") invalid(path, "Expected `str`");
  unicode(v, path);
  const length = [...v].length;
  if (length < min || length > max) invalid(path, `Expected \`str\` of length ${min}..${max}`);
  if (pattern && !pattern.test(v)) invalid(path, `Expected \`str\` matching ${String(pattern)}`);
  return v;
}

export const id = (v: unknown, path: string): string => str(v, path, 1, 128, ID);
export const fieldName = (v: unknown, path: string): string => str(v, path, 1, 64, FIELD);

function scalar(v: unknown, path: string): void {
  if (!["string", "number", "boolean"].includes(typeof v)) invalid(path, "Expected `str | int | float | bool`");
  if (typeof v === "string") unicode(v, path);
}

/** `.key` for a plain key, `["key"]` (JSON-escaped, so a lone surrogate shows as `\udXXX`) for any other. */
function keyPath(path: string, key: string): string {
  return /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`;
}

/** A JSON value, walked whole: every string and object key must be valid Unicode (the server decodes them all). */
function json(v: unknown, path: string): void {
  // An explicit stack, not recursion: a value nested too deep is the server's per-change business
  // (`value_too_deep`), not a stack overflow here.
  const todo: [unknown, string][] = [[v, path]];
  for (let item = todo.pop(); item !== undefined; item = todo.pop()) {
    const [x, at] = item;
    if (x === undefined || typeof x === "function" || typeof x === "symbol" || typeof x === "bigint") {
      invalid(at, "Expected a JSON value");
    }
    if (typeof x === "number" && !Number.isFinite(x)) invalid(at, "Expected a finite number");
    if (typeof x === "string") unicode(x, at);
    const children: [unknown, string][] = [];
    if (Array.isArray(x)) x.forEach((e, i) => children.push([e, `${at}[${i}]`]));
    else if (isObject(x)) {
      for (const [key, e] of Object.entries(x)) {
        const child = keyPath(at, key);
        unicode(key, child);
        children.push([e, child]);
      }
    }
    // Reversed, so the first bad string in document order is the one reported.
    for (let i = children.length - 1; i >= 0; i--) todo.push(children[i]!);
  }
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

/** Most collections a pull or a `hello` may name (`syncproto.messages.MAX_PULL_COLLECTIONS`). */
export const MAX_PULL_COLLECTIONS = 256;

function pullCollections(v: unknown, path: string): string[] {
  if (!Array.isArray(v)) invalid(path, "Expected `array`");
  if (v.length > MAX_PULL_COLLECTIONS) invalid(path, `Expected \`array\` of length <= ${MAX_PULL_COLLECTIONS}`);
  return v.map((c, i) => id(c, `${path}[${i}]`));
}

export function validatePullRequest(v: unknown): PullRequest {
  const o = object(v, "$");
  strict(o, "$", [], ["cursor", "limit", "collections"]);
  const cursor = o["cursor"] ?? null;
  if (cursor !== null) str(cursor, "$.cursor", 1, 512);
  const limit = "limit" in o ? int(o["limit"], "$.limit", 1, 10_000) : 1000;
  const collections = o["collections"] != null ? pullCollections(o["collections"], "$.collections") : null;
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

/** One `unavailable` item, typed strictly: the client acts on it (keeps the entity, reads it again). */
function readUnavailable(v: unknown, path: string): Unavailable {
  const o = object(v, path);
  present(o, path, ["collection", "entity", "seq", "code"]);
  return {
    collection: str(o["collection"], `${path}.collection`),
    entity: str(o["entity"], `${path}.entity`),
    seq: int(o["seq"], `${path}.seq`, Number.MIN_SAFE_INTEGER),
    code: str(o["code"], `${path}.code`),
  };
}

/** `o.unavailable` read strictly, left out when absent (the server leaves it out when empty). */
function withUnavailable<T extends object>(out: T, o: Obj, path: string): T & { unavailable?: Unavailable[] } {
  const v = o["unavailable"];
  if (v === undefined) return out;
  const items = array(v, `${path}.unavailable`).map((x, i) => readUnavailable(x, `${path}.unavailable[${i}]`));
  return { ...out, unavailable: items };
}

export function readPullResponse(v: unknown): PullResponse {
  const o = object(v, "$");
  const page: PullResponse = {
    changes: list(o["changes"], readEntityView),
    cursor: typeof o["cursor"] === "string" ? o["cursor"] : null,
    more: o["more"] === true,
    reset: o["reset"] === true,
    evictions: list(o["evictions"], readEviction),
    protocol: typeof o["protocol"] === "number" ? o["protocol"] : 1,
  };
  return withUnavailable(page, o, "$");
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

// --- WebSocket channel (PROTOCOL §9.6) ---------------------------------------------
//
// Messages are objects tagged by `type`. Like the server's decoder (msgspec structs,
// `syncproto.messages.Ws*`): a missing tag or a member of the wrong type is
// `invalid_request` at its path, an unknown tag `invalid_request` at `$.type`.
// Client messages are requests: `auth` and `push` refuse unknown members; `hello`
// ignores them, so that a newer client can still negotiate down (PROTOCOL §9.2), and
// so do `ping` and `pong`, as the server's structs do. Server messages are responses:
// unknown members are ignored and members with defaults may be left out (PROTOCOL §3).

const WS_ENCODINGS: readonly WsEncoding[] = ["json", "msgpack"];
const WS_CLIENT_TYPES: readonly WsClientMessage["type"][] = ["auth", "hello", "push", "ping", "pong"];
const WS_SERVER_TAGS: readonly WsServerMessage["type"][] = [
  "welcome",
  "changes",
  "synced",
  "reset",
  "push_result",
  "error",
  "ping",
  "pong",
];
/** The `type`s of the server messages protocol v1 defines. */
export const WS_SERVER_TYPES: ReadonlySet<string> = new Set(WS_SERVER_TAGS);

function bool(v: unknown, path: string): boolean {
  if (typeof v !== "boolean") invalid(path, "Expected `bool`");
  return v;
}

function array(v: unknown, path: string): unknown[] {
  if (!Array.isArray(v)) invalid(path, "Expected `array`");
  return v;
}

/** `read(v)` unless `v` is null. */
function nullable<T>(v: unknown, path: string, read: (v: unknown, path: string) => T): T | null {
  return v === null ? null : read(v, path);
}

/** `o[key]` read by `read`, or `fallback` when the member is absent. */
function member<T>(o: Obj, key: string, path: string, read: (v: unknown, path: string) => T, fallback: T): T {
  const v = o[key];
  return v === undefined ? fallback : read(v, `${path}.${key}`);
}

function encoding(v: unknown, path: string): WsEncoding {
  if (typeof v !== "string" || !(WS_ENCODINGS as readonly string[]).includes(v)) {
    invalid(path, `Invalid enum value ${JSON.stringify(v)}`);
  }
  return v as WsEncoding;
}

const anyInt = (v: unknown, path: string): number => int(v, path, Number.MIN_SAFE_INTEGER);
const anyStr = (v: unknown, path: string): string => str(v, path);
const nullableStr = (v: unknown, path: string): string | null => nullable(v, path, anyStr);

/** The object and its `type`, checked against `types` as a tagged union. */
function tagged<T extends string>(v: unknown, types: readonly T[]): [Obj, T] {
  const o = object(v, "$");
  present(o, "$", ["type"]);
  const tag = o["type"];
  if (typeof tag !== "string" || !(types as readonly string[]).includes(tag)) {
    invalid("$.type", `Invalid value ${JSON.stringify(tag)}`);
  }
  return [o, tag as T];
}

/**
 * Throws `WireError` unless `v` is a WebSocket client message the server's strict
 * decoder accepts; returns it in canonical form (defaults spelled out, and for
 * `hello`, `ping` and `pong` the members this version does not know left out).
 */
export function validateWsClientMessage(v: unknown): WsClientMessage {
  const [o, type] = tagged(v, WS_CLIENT_TYPES);
  switch (type) {
    case "auth":
      strict(o, "$", ["type", "token"]);
      return { type, token: str(o["token"], "$.token") };
    case "hello": {
      present(o, "$", ["versions"]);
      const versions = array(o["versions"], "$.versions").map((x, i) => anyInt(x, `$.versions[${i}]`));
      return {
        type,
        versions,
        replica: member(o, "replica", "$", (x, path) => nullable(x, path, id), null),
        cursor: member(o, "cursor", "$", (x, path) => nullable(x, path, (c, p) => str(c, p, 1, 512)), null),
        collections: member(o, "collections", "$", (x, path) => nullable(x, path, pullCollections), null),
        encoding: member(o, "encoding", "$", encoding, "json"),
      };
    }
    case "push": {
      strict(o, "$", ["type", "id", "replica", "changes"]);
      return {
        type,
        id: str(o["id"], "$.id", 1, 64),
        replica: id(o["replica"], "$.replica"),
        changes: array(o["changes"], "$.changes").map((c, i) => validateChange(c, `$.changes[${i}]`)),
      };
    }
    case "ping":
    case "pong":
      return { type, id: member(o, "id", "$", nullableStr, null) };
  }
}

/** The JSON text of a client message, after `validateWsClientMessage` (which throws `WireError`). */
export function encodeWsClientMessage(message: WsClientMessage): string {
  return JSON.stringify(validateWsClientMessage(message));
}

/**
 * Reads a WebSocket server message: throws `WireError` unless `v` is one of the
 * messages of protocol v1 with its required members of the right types; members a
 * newer server adds are ignored, members with defaults may be left out.
 */
export function readWsServerMessage(v: unknown): WsServerMessage {
  const [o, type] = tagged(v, WS_SERVER_TAGS);
  switch (type) {
    case "welcome":
      present(o, "$", ["version", "encoding", "cursor", "heartbeat_ms", "idle_timeout_ms"]);
      return {
        type,
        version: anyInt(o["version"], "$.version"),
        encoding: encoding(o["encoding"], "$.encoding"),
        cursor: nullableStr(o["cursor"], "$.cursor"),
        heartbeat_ms: anyInt(o["heartbeat_ms"], "$.heartbeat_ms"),
        idle_timeout_ms: anyInt(o["idle_timeout_ms"], "$.idle_timeout_ms"),
      };
    case "changes": {
      present(o, "$", ["changes", "cursor"]);
      const frame: WsChanges = {
        type,
        changes: array(o["changes"], "$.changes").map(readEntityView),
        cursor: str(o["cursor"], "$.cursor"),
        more: member(o, "more", "$", bool, false),
        evictions: member(o, "evictions", "$", (x, path) => array(x, path).map(readEviction), []),
      };
      return withUnavailable(frame, o, "$");
    }
    case "synced":
      present(o, "$", ["cursor"]);
      return { type, cursor: nullableStr(o["cursor"], "$.cursor") };
    case "reset":
      return { type };
    case "push_result":
      present(o, "$", ["id", "results"]);
      return {
        type,
        id: str(o["id"], "$.id"),
        results: array(o["results"], "$.results").map(readResult),
        protocol: member(o, "protocol", "$", anyInt, 1),
      };
    case "error":
      present(o, "$", ["code", "message"]);
      return {
        type,
        code: str(o["code"], "$.code"),
        message: str(o["message"], "$.message"),
        id: member(o, "id", "$", nullableStr, null),
        ...(o["retry_after"] == null ? {} : { retry_after: int(o["retry_after"], "$.retry_after", 0) }),
      };
    case "ping":
    case "pong":
      return { type, id: member(o, "id", "$", nullableStr, null) };
  }
}
