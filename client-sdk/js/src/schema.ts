/**
 * The server's collection schema on the device, so optimistic reads use the same
 * field kinds and register rules (`syncproto.schema`, `syncproto.rules`).
 *
 * ```ts
 * const schema = { deliveries: { fields: { status: { kind: "register", rule: "precedence",
 *   order: ["delivered", "failed"] }, cod_cents: { kind: "counter" } } } };
 * ```
 * A field that is not declared is a register with last-writer-wins. A `python`
 * rule runs on the server only; reads predict it with LWW until a pull brings
 * the server's pick.
 */
import { compareHlc } from "./clock.js";
import type { FieldKind, Json, SiblingView } from "./types.js";

export interface FieldSpec {
  kind?: FieldKind;
  rule?: "lww" | "precedence" | "python";
  /** precedence: the values, strongest first */
  order?: Json[];
}

export interface CollectionSpec {
  fields?: Record<string, FieldSpec>;
  on_delete?: "update_wins" | "delete_wins";
}

export type Schema = Record<string, CollectionSpec>;

/** The deterministic LWW key: highest HLC, then replica id, then counter. */
export function compareLww(a: SiblingView, b: SiblingView): number {
  return compareHlc(a.hlc, b.hlc) || (a.replica < b.replica ? -1 : a.replica > b.replica ? 1 : 0) || a.n - b.n;
}

/** Canonical JSON (sorted keys), used to compare values as the server does. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

export class Collection {
  constructor(
    readonly name: string,
    readonly spec: CollectionSpec = {},
  ) {}

  get onDelete(): "update_wins" | "delete_wins" {
    return this.spec.on_delete ?? "update_wins";
  }

  /** The declared kind, or undefined for an undeclared field. */
  declared(field: string): FieldKind | undefined {
    const f = this.spec.fields?.[field];
    return f ? (f.kind ?? "register") : undefined;
  }

  /** The sibling a reader sees: the rule's pick among concurrent values (never empty). */
  pick(field: string, siblings: readonly SiblingView[]): SiblingView {
    const spec = this.spec.fields?.[field];
    const order = spec?.rule === "precedence" ? (spec.order ?? []).map(canonicalJson) : null;
    const rank = (s: SiblingView): number => {
      if (order === null) return 0;
      const i = order.indexOf(canonicalJson(s.value));
      return i < 0 ? 0 : order.length - i;
    };
    return siblings.reduce((best, s) => {
      const byRank = rank(s) - rank(best);
      return byRank > 0 || (byRank === 0 && compareLww(s, best) > 0) ? s : best;
    });
  }
}
