/**
 * Collaborative text: a Yjs document whose root `Y.Text` is named `text`, the same
 * document the server keeps with pycrdt (Yjs v1 updates on the wire).
 *
 * The API speaks code points, like the Python SDK. JavaScript's `Y.Text` counts
 * UTF-16 code units (pycrdt counts UTF-8 bytes), so positions are converted here
 * and nowhere else.
 */
import * as Y from "yjs";

export const ROOT = "text";

/** The bytes are not a Yjs update this text can take whole (`invalid_text_update`). */
export class InvalidTextUpdate extends Error {
  override name = "InvalidTextUpdate";
}

export function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

export function fromBase64(encoded: string): Uint8Array {
  let binary: string;
  try {
    binary = atob(encoded);
  } catch {
    throw new InvalidTextUpdate("text update is not valid base64");
  }
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/** A document holding `state` (a base64 v1 update, or none). */
export function load(state: string | undefined): Y.Doc {
  const doc = new Y.Doc();
  doc.getText(ROOT);
  if (state) Y.applyUpdate(doc, fromBase64(state));
  return doc;
}

/**
 * Merge `update` into `state` and return the new state (base64), or throw `InvalidTextUpdate`.
 *
 * An update that depends on content the state lacks is refused whole, never
 * half-applied (issue 12): Yjs would keep the missing part as pending structs or
 * a pending delete set, and the re-encoded state would silently lose it. The check
 * runs on the document after applying, as the server's does.
 */
export function applyUpdate(state: string | undefined, update: string): string {
  const doc = load(state);
  try {
    Y.applyUpdate(doc, fromBase64(update));
  } catch (exc) {
    if (exc instanceof InvalidTextUpdate) throw exc;
    throw new InvalidTextUpdate(`text update cannot be decoded: ${(exc as Error).message}`);
  }
  if (doc.store.pendingStructs !== null) {
    throw new InvalidTextUpdate("text update depends on edits of this text that are not here yet");
  }
  if (doc.store.pendingDs !== null) {
    throw new InvalidTextUpdate("text update deletes edits of this text that are not here yet");
  }
  return toBase64(Y.encodeStateAsUpdate(doc));
}

export function value(state: string | undefined): string {
  return load(state).getText(ROOT).toJSON();
}

/** UTF-16 offset of code-point index `codePoints` in `s`; RangeError outside the text. */
export function utf16Offset(s: string, codePoints: number): number {
  if (!Number.isInteger(codePoints) || codePoints < 0) throw new RangeError(`position ${codePoints} is not a valid index`);
  let offset = 0;
  for (let i = 0; i < codePoints; i++) {
    if (offset >= s.length) throw new RangeError(`position ${codePoints} is outside text of length ${[...s].length}`);
    const unit = s.charCodeAt(offset);
    offset += unit >= 0xd800 && unit <= 0xdbff && offset + 1 < s.length ? 2 : 1;
  }
  return offset;
}

/**
 * Edit the text held in `state` at code point `pos`: delete `deleteCount` code points,
 * then insert `insert`. Returns the Yjs update the edit produced (base64), ready to push.
 * Each edit gets a fresh Yjs client id, as in the Python SDK, so two tabs or a crash
 * can never produce two different structs with one id.
 */
export function splice(state: string | undefined, pos: number, deleteCount: number, insert: string): string {
  const doc = load(state);
  const text = doc.getText(ROOT);
  const current = text.toJSON();
  const start = utf16Offset(current, pos);
  const end = utf16Offset(current, pos + deleteCount);
  const before = Y.encodeStateVector(doc);
  doc.transact(() => {
    if (end > start) text.delete(start, end - start);
    if (insert) text.insert(start, insert);
  });
  return toBase64(Y.encodeStateAsUpdate(doc, before));
}

/**
 * The smallest single edit that turns `before` into `after`, in code points: `[pos, deleteCount, insert]`
 * after their common prefix and common suffix, or null when they are equal.
 */
export function diff(before: string, after: string): [number, number, string] | null {
  if (before === after) return null;
  const a = Array.from(before);
  const b = Array.from(after);
  let p = 0;
  while (p < a.length && p < b.length && a[p] === b[p]) p++;
  let s = 0;
  while (s < a.length - p && s < b.length - p && a[a.length - 1 - s] === b[b.length - 1 - s]) s++;
  return [p, a.length - p - s, b.slice(p, b.length - s).join("")];
}

/**
 * Both edits of `base`, each a single splice: `mine` (typed into a box that showed `base`) and `theirs` (the
 * text now, a remote edit pulled meanwhile). Edits apart are both kept; overlapping ones keep both
 * insertions (theirs first) and every deletion. Code points throughout.
 */
export function merge(base: string, mine: string, theirs: string): string {
  const m = diff(base, mine);
  const t = diff(base, theirs);
  if (m === null || mine === theirs) return theirs;
  if (t === null) return mine;
  const b = Array.from(base);
  const cut = (from: number, to = b.length): string => b.slice(from, to).join("");
  const [mp, md, mi] = m;
  const [tp, td, ti] = t;
  if (tp + td <= mp) return cut(0, tp) + ti + cut(tp + td, mp) + mi + cut(mp + md);
  if (mp + md <= tp) return cut(0, mp) + mi + cut(mp + md, tp) + ti + cut(tp + td);
  return cut(0, Math.min(mp, tp)) + ti + mi + cut(Math.max(mp + md, tp + td));
}
