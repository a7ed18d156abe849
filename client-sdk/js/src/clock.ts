/**
 * Version vectors and hybrid logical clocks, as in `syncproto.vv` and `syncproto.hlc`.
 * Causality is decided by version vectors; an HLC only breaks ties between writes
 * that are already known to be concurrent, and orders log entries.
 */
import type { Hlc, VersionVector } from "./types.js";

/** True when a state with version vector `vv` has seen the change `(replica, n)`. */
export function covers(vv: VersionVector, replica: string, n: number): boolean {
  return (vv[replica] ?? 0) >= n;
}

/** True when `a` has seen everything `b` has. */
export function dominates(a: VersionVector, b: VersionVector): boolean {
  return Object.entries(b).every(([r, n]) => (a[r] ?? 0) >= n);
}

/** Lexicographic order of two HLC stamps. */
export function compareHlc(a: Hlc, b: Hlc): number {
  return a[0] - b[0] || a[1] - b[1];
}

/** The next stamp after `last` at wall time `wall` (milliseconds). */
export function tick(last: Hlc, wall: number): Hlc {
  return wall > last[0] ? [wall, 0] : [last[0], last[1] + 1];
}

/** `last` moved past a stamp seen from another replica, so later local stamps sort after it. */
export function observe(last: Hlc, remote: Hlc): Hlc {
  return compareHlc(remote, last) > 0 ? [remote[0], remote[1]] : last;
}
