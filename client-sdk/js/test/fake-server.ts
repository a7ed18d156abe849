/**
 * A scripted protocol v1 server behind a `fetch` function, for unit tests: it numbers
 * pushes as a real server does (applied, duplicate, out_of_order, n_reused) and serves
 * queued pull pages. Hooks change its answers per test.
 */
import type { Change, PullRequest, PullResponse, PushRequest, PushResult } from "../src/types.js";

export class FakeServer {
  readonly hwm = new Map<string, number>();
  readonly ids = new Map<string, string>();
  readonly log: Change[] = [];
  readonly pushes: PushRequest[] = [];
  readonly pulls: PullRequest[] = [];
  readonly tokens: string[] = [];
  /** Pull responses served in order; then an empty page. */
  pages: Partial<PullResponse>[] = [];
  /** Answer instead of the normal logic (return undefined to fall through). */
  intercept: ((path: string, body: unknown, token: string) => Response | undefined) | null = null;
  /** A rejection code for a change, or null to apply it. */
  rejectIf: (c: Change) => string | null = () => null;

  readonly fetch: typeof fetch = (input, init) => {
    const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
    const path = new URL(url).pathname;
    const headers = new Headers(init?.headers);
    const token = (headers.get("authorization") ?? "").replace(/^Bearer /, "");
    this.tokens.push(token);
    const body: unknown = typeof init?.body === "string" ? JSON.parse(init.body) : null;
    const special = this.intercept?.(path, body, token);
    if (special) return Promise.resolve(special);
    if (path === "/v1/sync/push") return Promise.resolve(json(this.push(body as PushRequest)));
    if (path === "/v1/sync/pull") return Promise.resolve(json(this.pull(body as PullRequest)));
    return Promise.resolve(json({ error: { code: "not_found", message: path } }, 404));
  };

  push(request: PushRequest): { results: PushResult[]; protocol: number } {
    this.pushes.push(request);
    const results = request.changes.map((c): PushResult => {
      const hwm = this.hwm.get(request.replica) ?? 0;
      const key = `${request.replica}:${c.n}`;
      if (c.n <= hwm) {
        if (this.ids.get(key) === c.id) return { status: "duplicate", id: c.id, n: c.n };
        return { status: "rejected", id: c.id, n: c.n, error: { code: "n_reused", message: "n used" } };
      }
      if (c.n > hwm + 1) return { status: "out_of_order", id: c.id, n: c.n, expected: hwm + 1 };
      this.hwm.set(request.replica, c.n);
      this.ids.set(key, c.id);
      const code = this.rejectIf(c);
      if (code) return { status: "rejected", id: c.id, n: c.n, error: { code, message: `refused: ${code}` } };
      this.log.push(c);
      return { status: "applied", id: c.id, n: c.n, seq: this.log.length };
    });
    return { results, protocol: 1 };
  }

  pull(request: PullRequest): Partial<PullResponse> {
    this.pulls.push(request);
    return this.pages.shift() ?? { changes: [], cursor: `c${this.log.length}`, more: false };
  }
}

export function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
}

let dbs = 0;
/** A database name no other test uses. */
export function freshDb(): string {
  return `test-${process.pid}-${++dbs}-${Math.random().toString(36).slice(2)}`;
}

/** Wait until `check` holds (polling the event loop), or fail after `ms`. */
export async function until(check: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 5));
  }
}
