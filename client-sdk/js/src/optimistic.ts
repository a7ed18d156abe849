/**
 * Optimistic reads: the last pulled view with this replica's pending changes applied,
 * by the rules of `syncproto.optimistic` (the golden vectors in
 * `protocol/vectors/merge/` hold both SDKs to the same answers):
 *
 * - `set` removes the siblings its effective context has seen; the rule picks
 *   among what remains (a predicted conflict keeps `siblings`);
 * - `inc` adds to the counter, `add`/`remove` change the set, `text` merges the
 *   Yjs update, `append` adds to the log;
 * - `delete` hides the entity; a later update revives it (`update_wins`), or only
 *   if it has seen the delete (`delete_wins`);
 * - a change the server would reject whole is skipped whole: ops that do not fit
 *   the fields' kinds, a delete mixed with other ops, a text update the text
 *   cannot take whole.
 */
import { covers, dominates } from "./clock.js";
import { canonicalJson, Collection } from "./schema.js";
import * as text from "./text.js";
import type { Change, EntityView, FieldKind, FieldView, Json, Op, SiblingView, VersionVector } from "./types.js";

const OP_KIND: Record<Exclude<Op["op"], "delete">, FieldKind> = {
  set: "register",
  inc: "counter",
  add: "set",
  remove: "set",
  text: "text",
  append: "log",
};

/** Code-point order, as Python sorts strings (JavaScript's default sorts UTF-16 units). */
export function compareCodePoints(a: string, b: string): number {
  const x = [...a];
  const y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = (x[i] as string).codePointAt(0)! - (y[i] as string).codePointAt(0)!;
    if (d) return d;
  }
  return x.length - y.length;
}

/** True when the server will reject `change` whole because of its shape or field kinds. */
export function predictsRejection(view: EntityView | undefined, change: Change, collection: Collection): boolean {
  const ops = change.ops;
  if (!ops.length) return true;
  if (ops.some((o) => o.op === "delete")) return ops.length > 1;
  for (const o of ops) {
    if (o.op === "delete") continue;
    const have = collection.declared(o.field) ?? view?.fields[o.field]?.kind;
    if (have !== undefined && OP_KIND[o.op] !== have) return true;
  }
  return false;
}

/** The view after `change` (made by `replica`); `view` is not modified. */
export function applyPending(
  view: EntityView | undefined,
  change: Change,
  replica: string,
  collection: Collection,
): EntityView {
  const base: EntityView = view ?? {
    collection: change.collection,
    entity: change.entity,
    seq: 0,
    vv: {},
    deleted: false,
    fields: {},
  };
  if (predictsRejection(view, change, collection)) return base;
  const n = change.n;
  // As on the server, a replica has always seen its own earlier changes.
  const ctx: VersionVector = { ...change.context };
  if ((ctx[replica] ?? 0) < n - 1) ctx[replica] = n - 1;
  const vv = { ...base.vv, [replica]: Math.max(base.vv[replica] ?? 0, n) };
  const out: EntityView = { ...base, vv, fields: { ...base.fields } };
  if (change.ops[0]?.op === "delete") {
    out.deleted = true;
    return out;
  }
  // Under delete_wins an update revives the entity only if it has seen the delete.
  if (collection.onDelete === "update_wins" || dominates(ctx, base.vv)) out.deleted = false;
  for (const o of change.ops) {
    if (o.op === "delete") continue;
    try {
      out.fields[o.field] = applyOp(out.fields[o.field], o, replica, change, ctx, collection);
    } catch (exc) {
      // The server refuses the whole change (`invalid_text_update`).
      if (exc instanceof text.InvalidTextUpdate) return base;
      throw exc;
    }
  }
  return out;
}

function applyOp(
  current: FieldView | undefined,
  o: Exclude<Op, { op: "delete" }>,
  replica: string,
  change: Change,
  ctx: VersionVector,
  collection: Collection,
): FieldView {
  switch (o.op) {
    case "set":
      return assign(current, o.field, { value: o.value, replica, n: change.n, hlc: change.hlc }, ctx, collection);
    case "inc":
      return { kind: "counter", value: ((current?.value as number | undefined) ?? 0) + o.by };
    case "add":
    case "remove":
      return setField(current, o.value, o.op === "add");
    case "text": {
      const update = text.applyUpdate(current?.update, o.update);
      return { kind: "text", value: text.value(update), update };
    }
    case "append":
      return { kind: "log", value: [...((current?.value as Json[] | undefined) ?? []), o.value] };
  }
}

function assign(
  current: FieldView | undefined,
  name: string,
  write: SiblingView,
  ctx: VersionVector,
  collection: Collection,
): FieldView {
  // A sibling with the write's own dot is an earlier op of the same change: replaced, as on the server.
  const kept = (current?.siblings ?? []).filter(
    (s) => !covers(ctx, s.replica, s.n) && !(s.replica === write.replica && s.n === write.n),
  );
  if (!kept.length) return { kind: "register", value: write.value };
  const frontier = [...kept.map((s) => ({ value: s.value, replica: s.replica, n: s.n, hlc: s.hlc })), write].sort(
    (a, b) => compareCodePoints(a.replica, b.replica) || a.n - b.n,
  );
  return { kind: "register", value: collection.pick(name, frontier).value, siblings: frontier };
}

function setField(current: FieldView | undefined, value: Json, add: boolean): FieldView {
  const elements = new Map<string, Json>();
  for (const v of (current?.value as Json[] | undefined) ?? []) elements.set(canonicalJson(v), v);
  const key = canonicalJson(value);
  if (add) elements.set(key, value);
  else elements.delete(key);
  // Same order as the server's: sorted by canonical JSON.
  const keys = [...elements.keys()].sort(compareCodePoints);
  return { kind: "set", value: keys.map((k) => elements.get(k) as Json) };
}

/**
 * `stored` with this replica's outbox changes applied, in counter order. A change
 * with `n <= vv[me]` is skipped: the stored state already reflects it.
 */
export function optimisticView(
  stored: EntityView | undefined,
  changes: Iterable<Change>,
  me: string,
  collection: Collection,
): EntityView | undefined {
  let view = stored;
  const covered = stored?.vv[me] ?? 0;
  for (const change of changes) if (change.n > covered) view = applyPending(view, change, me, collection);
  return view;
}

/** The stored view after a pulled item: its fields replace ours, the rest stay (PROTOCOL §4.4). */
export function mergeDelta(old: EntityView | undefined, delta: EntityView): EntityView {
  if (old === undefined) return delta;
  const fields = { ...old.fields, ...delta.fields };
  const sorted = Object.fromEntries(Object.keys(fields).sort().map((k) => [k, fields[k] as FieldView]));
  const merged: EntityView = { ...delta, fields: sorted };
  // A delta lists the attachments of the fields it carries; those of older fields keep their last status.
  if (old.attachments || delta.attachments) merged.attachments = { ...old.attachments, ...delta.attachments };
  return merged;
}

/** Field values an app reads, or undefined for a missing or deleted entity. */
export function visible(view: EntityView | undefined): Record<string, Json> | undefined {
  if (view === undefined || view.deleted) return undefined;
  return Object.fromEntries(Object.entries(view.fields).map(([k, f]) => [k, f.value]));
}
