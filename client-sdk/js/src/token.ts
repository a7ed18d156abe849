/**
 * The current bearer token and when to ask for a fresh one: when the server refuses it
 * (401, close 4401, `token_expired`) and shortly before its `exp` claim passes, so a
 * live session never drops for an expired token. A refused or missing token never
 * costs a write: writes wait in the outbox until a push succeeds.
 */
import type { TokenProvider } from "./transport/types.js";

/** Seconds before `exp` at which a token counts as expiring. */
export const REFRESH_MARGIN_S = 60;

/** The `exp` claim of a JWT in seconds, or null (not a JWT, no `exp`). The signature is the server's business. */
export function tokenExpiry(token: string): number | null {
  const payload = token.split(".")[1];
  if (!payload) return null;
  try {
    const b64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4))) as { exp?: unknown };
    return typeof claims.exp === "number" ? claims.exp : null;
  } catch {
    return null;
  }
}

export class TokenSource {
  private current: string | null;
  private inflight: Promise<string> | null = null;

  constructor(
    private provider: TokenProvider,
    private readonly now: () => number = Date.now,
    /** called with every token obtained from the provider */
    private readonly onToken: (token: string) => void = () => undefined,
  ) {
    this.current = typeof provider === "string" ? provider : null;
  }

  /** The token to send now: the cached one unless it is about to expire. */
  async get(): Promise<string> {
    if (this.current !== null && !this.expiring(this.current)) return this.current;
    return this.refresh();
  }

  /** Ask the provider again (after a refusal); concurrent callers share one call. */
  async refresh(): Promise<string> {
    if (typeof this.provider === "string") return this.provider;
    const provider = this.provider;
    this.inflight ??= Promise.resolve()
      .then(() => provider())
      .then((token) => {
        this.current = token;
        this.onToken(token);
        return token;
      })
      .finally(() => {
        this.inflight = null;
      });
    return this.inflight;
  }

  /** The app handed us a token (`setToken`); a function provider stays in place for later refreshes. */
  set(token: string): void {
    this.current = token;
    if (typeof this.provider === "string") this.provider = token;
  }

  peek(): string | null {
    return this.current;
  }

  /** The current token's `exp` (seconds), or null: none yet, not a JWT, or no `exp`. */
  expiry(): number | null {
    return this.current === null ? null : tokenExpiry(this.current);
  }

  /** Milliseconds until the current token should be refreshed, or null when it never expires. */
  refreshInMs(): number | null {
    const exp = this.current === null ? null : tokenExpiry(this.current);
    return exp === null ? null : Math.max(0, (exp - REFRESH_MARGIN_S) * 1000 - this.now());
  }

  private expiring(token: string): boolean {
    const exp = tokenExpiry(token);
    return exp !== null && exp - REFRESH_MARGIN_S / 2 <= this.now() / 1000 && typeof this.provider !== "string";
  }
}
