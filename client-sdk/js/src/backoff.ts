/**
 * Retry delays: exponential backoff with "equal jitter", and `Retry-After` honoured,
 * as the Python SDK's `Backoff`. Jitter matters for the fleet: when an outage ends,
 * a thousand drivers reconnect at once, and random delays spread them out.
 */
export class Backoff {
  attempt = 0;

  constructor(
    readonly base = 0.5,
    readonly cap = 60,
    private readonly rng: () => number = Math.random,
  ) {}

  /** Seconds, uniform in `[d/2, d]` with `d = min(cap, base * 2 ** attempt)`. */
  next(): number {
    const delay = Math.min(this.cap, this.base * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 32);
    return delay / 2 + (delay / 2) * this.rng();
  }

  reset(): void {
    this.attempt = 0;
  }

  /** The server's `Retry-After`, plus up to 10 % jitter so rate-limited clients do not return in step. */
  retryAfter(seconds: number): number {
    this.attempt = Math.min(this.attempt + 1, 32);
    return seconds * (1 + 0.1 * this.rng());
  }
}

/** Seconds from a `Retry-After` header: delta-seconds or an HTTP date (RFC 9110 §10.2.3). */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | null {
  if (!value) return null;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v);
  const when = Date.parse(v);
  return Number.isNaN(when) ? null : Math.max(0, (when - now) / 1000);
}
