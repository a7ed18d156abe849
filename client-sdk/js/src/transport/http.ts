/** Protocol v1 over HTTP with `fetch`: `POST /v1/sync/push` and `/v1/sync/pull` (PROTOCOL §3-4). */
import { readAttachmentStatusResponse, type RemoteStatus } from "../attachments-ref.js";
import { parseRetryAfter } from "../backoff.js";
import { ServerError, TransportError } from "../errors.js";
import type { TokenSource } from "../token.js";
import type { ConflictPage, EntityView, PullRequest, PullResponse, PushRequest, PushResponse } from "../types.js";
import { readConflictPage, readEntityView, readErrorResponse, readPullResponse, readPushResponse } from "../wire.js";
import type { Transport } from "./types.js";

export class HttpTransport implements Transport {
  readonly name = "http";
  private readonly base: string;

  constructor(
    url: string,
    private readonly tokens: TokenSource,
    private readonly fetchImpl: typeof fetch = (...args) => globalThis.fetch(...args),
    private readonly timeoutMs = 30_000,
  ) {
    this.base = url.replace(/\/+$/, "");
  }

  push(request: PushRequest): Promise<PushResponse> {
    return this.send("POST", "/v1/sync/push", readPushResponse, JSON.stringify(request));
  }

  pull(request: PullRequest): Promise<PullResponse> {
    return this.send("POST", "/v1/sync/pull", readPullResponse, JSON.stringify(request));
  }

  /** One page of `GET /v1/conflicts` (filters: collection, entity, field, kind, status, after, limit). */
  conflicts(filters: Record<string, string | number | undefined> = {}): Promise<ConflictPage> {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(filters)) if (v !== undefined) query.set(k, String(v));
    const qs = query.toString();
    return this.send("GET", `/v1/conflicts${qs ? `?${qs}` : ""}`, readConflictPage);
  }

  /** The server's merged view of one entity, or undefined if it does not exist (or is out of scope). */
  async entity(collection: string, entity: string): Promise<EntityView | undefined> {
    try {
      const path = `/v1/entities/${encodeURIComponent(collection)}/${encodeURIComponent(entity)}`;
      return await this.send("GET", path, readEntityView);
    } catch (exc) {
      if (exc instanceof ServerError && exc.status === 404) return undefined;
      throw exc;
    }
  }

  /** `POST /v1/attachments/status` (PROTOCOL §10.2): the status of each id (at most 500) this token may see. */
  async attachmentStatus(ids: string[]): Promise<Record<string, RemoteStatus>> {
    const answer = await this.send("POST", "/v1/attachments/status", readAttachmentStatusResponse, JSON.stringify({ ids }));
    return answer.attachments;
  }

  async close(): Promise<void> {}

  private async send<T>(method: string, path: string, read: (v: unknown) => T, body?: string): Promise<T> {
    let response = await this.request(method, path, await this.tokens.get(), body);
    if (response.status === 401) {
      // Expired or revoked: one more try with a fresh token. The outbox is untouched either way.
      response = await this.request(method, path, await this.tokens.refresh(), body);
    }
    const text = await response.text().catch((exc: unknown) => {
      throw new TransportError(`${method} ${path}: the response broke off: ${String(exc)}`);
    });
    if (response.status >= 400) throw serverError(response, text);
    try {
      return read(JSON.parse(text));
    } catch (exc) {
      // A proxy or captive portal answering 200 with HTML: the server was not reached.
      throw new TransportError(`${method} ${path}: the response is not protocol JSON: ${String(exc)}`);
    }
  }

  private async request(method: string, path: string, token: string, body?: string): Promise<Response> {
    try {
      const init: RequestInit = {
        method,
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        signal: AbortSignal.timeout(this.timeoutMs),
        cache: "no-store",
      };
      if (body !== undefined) init.body = body;
      return await this.fetchImpl(this.base + path, init);
    } catch (exc) {
      throw new TransportError(`${method} ${path}: ${String(exc)}`);
    }
  }
}

function serverError(response: Response, text: string): ServerError {
  let code = `http_${response.status}`;
  let message = text.slice(0, 200);
  try {
    ({ code, message } = readErrorResponse(JSON.parse(text)).error);
  } catch {
    // not an ErrorResponse (a proxy's page): keep the status
  }
  return new ServerError(response.status, code, message, parseRetryAfter(response.headers.get("retry-after")));
}
