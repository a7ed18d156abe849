/**
 * Wire types of sync protocol v1 (PROTOCOL.md §4 and §9), as plain JSON objects.
 *
 * They mirror `syncproto.messages`: same member names, same tags. Requests are
 * validated strictly before they leave the device (`wire.ts`); responses are read
 * leniently, ignoring members a newer server adds (PROTOCOL §3, evolution rule 1).
 */

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
/** A JSON scalar: what an add-wins set holds. */
export type SetElement = string | number | boolean;
/** Hybrid logical clock: `[wall_ms, counter]`. */
export type Hlc = [number, number];
/** Replica id -> highest counter seen from it. */
export type VersionVector = Record<string, number>;
export type FieldKind = "register" | "counter" | "set" | "text" | "log";

export type SetOp = { op: "set"; field: string; value: Json };
export type IncOp = { op: "inc"; field: string; by: number };
export type AddOp = { op: "add"; field: string; value: SetElement };
export type RemoveOp = { op: "remove"; field: string; value: SetElement };
/** `update` is base64 of a Yjs v1 update. */
export type TextOp = { op: "text"; field: string; update: string };
export type AppendOp = { op: "append"; field: string; value: Json };
export type DeleteOp = { op: "delete" };
export type FieldOp = SetOp | IncOp | AddOp | RemoveOp | TextOp | AppendOp;
export type Op = FieldOp | DeleteOp;

export interface Change {
  id: string;
  n: number;
  collection: string;
  entity: string;
  hlc: Hlc;
  context: VersionVector;
  ops: Op[];
}

export interface PushRequest {
  replica: string;
  changes: Change[];
}

export interface ErrorBody {
  code: string;
  message: string;
}

export type PushResult =
  | { status: "applied"; id: string; n: number; seq: number }
  | { status: "duplicate"; id: string; n: number }
  | { status: "out_of_order"; id: string; n: number; expected: number }
  | { status: "rejected"; id: string; n: number; error: ErrorBody };

export interface PushResponse {
  results: PushResult[];
  protocol: number;
}

export interface PullRequest {
  cursor: string | null;
  limit: number;
  collections: string[] | null;
}

export interface SiblingView {
  value: Json;
  replica: string;
  n: number;
  hlc: Hlc;
}

export interface FieldView {
  kind: FieldKind;
  value: Json;
  /** register only, present when concurrent values exist */
  siblings?: SiblingView[];
  /** text only: the whole Yjs state as a base64 v1 update */
  update?: string;
}

export interface EntityView {
  collection: string;
  entity: string;
  seq: number;
  vv: VersionVector;
  deleted: boolean;
  fields: Record<string, FieldView>;
  /** status of each attachment the sent fields reference, when there are any */
  attachments?: Record<string, "pending" | "available" | "refused">;
}

export interface Eviction {
  collection: string;
  entity: string;
  seq: number;
}

/**
 * An entity changed after the cursor whose stored state failed the server's integrity check
 * (`code`: `data_integrity`). The cursor moves past it: keep what the device holds and read it
 * again with `GET /v1/entities/{collection}/{entity}` until 200 or 404 (PROTOCOL §4.4).
 */
export interface Unavailable {
  collection: string;
  entity: string;
  seq: number;
  code: string;
}

export interface PullResponse {
  changes: EntityView[];
  cursor: string | null;
  more: boolean;
  reset: boolean;
  evictions: Eviction[];
  protocol: number;
  /** present when the server sent it (it leaves it out when empty) */
  unavailable?: Unavailable[];
}

export interface ErrorResponse {
  error: ErrorBody;
}

export interface ConflictValue {
  value: Json;
  replica: string;
  n: number;
  user: string;
  hlc: Hlc;
}

export interface ConflictView {
  id: string;
  collection: string;
  entity: string;
  field: string | null;
  kind: "register" | "delete_update" | "clock_skew";
  rule: string;
  seq: number;
  created_at: string;
  status: string;
  values: ConflictValue[];
  winner?: ConflictValue | null;
  note?: string | null;
}

export interface ConflictPage {
  conflicts: ConflictView[];
  next: string | null;
}

// --- WebSocket channel (PROTOCOL §9.6) ---------------------------------------------
// Decoded forms: members a sender may leave out are filled in with their defaults
// (`validateWsClientMessage`, `readWsServerMessage` in `wire.ts`).

/** The encoding of server messages from `welcome` on. */
export type WsEncoding = "json" | "msgpack";

/** A bearer token, as the first message or a refresh (client). */
export interface WsAuth {
  type: "auth";
  token: string;
}

/** Opens the session: the versions the client speaks, where it is, what it wants (client). */
export interface WsHello {
  type: "hello";
  versions: number[];
  replica: string | null;
  cursor: string | null;
  collections: string[] | null;
  encoding: WsEncoding;
}

/** An HTTP push body plus the correlation `id` that `push_result` echoes (client). */
export interface WsPush {
  type: "push";
  id: string;
  replica: string;
  changes: Change[];
}

/** Heartbeat, either direction; answered by `pong` with the same `id`. */
export interface WsPing {
  type: "ping";
  id: string | null;
}

export interface WsPong {
  type: "pong";
  id: string | null;
}

/** The server's answer to `hello`: the chosen version and encoding. */
export interface WsWelcome {
  type: "welcome";
  version: number;
  encoding: WsEncoding;
  cursor: string | null;
  heartbeat_ms: number;
  idle_timeout_ms: number;
}

/** Entities changed after the previous frame's cursor: the changes of a pull response. */
export interface WsChanges {
  type: "changes";
  changes: EntityView[];
  cursor: string;
  more: boolean;
  evictions: Eviction[];
  /** as in a pull response: present when the server sent it */
  unavailable?: Unavailable[];
}

/** Catch-up reached the head of the log: live changes follow. */
export interface WsSynced {
  type: "synced";
  cursor: string | null;
}

/** The cursor is older than tombstone retention: drop synced state (not the outbox). */
export interface WsReset {
  type: "reset";
}

/** The results of one `push`, exactly as in an HTTP push response. */
export interface WsPushResult {
  type: "push_result";
  id: string;
  results: PushResult[];
  protocol: number;
}

/** A request failed (`id` names the push, if any); fatal errors are followed by a close. */
export interface WsError {
  type: "error";
  code: string;
  message: string;
  id: string | null;
  /** only with `rate_limited`: seconds to wait before the next request (as HTTP's `Retry-After`) */
  retry_after?: number;
}

export type WsClientMessage = WsAuth | WsHello | WsPush | WsPing | WsPong;
export type WsServerMessage = WsWelcome | WsChanges | WsSynced | WsReset | WsPushResult | WsError | WsPing | WsPong;

export const PROTOCOL_VERSION = 1;
