/**
 * Protocol v1 over the WebSocket channel `/v1/sync/ws` (PROTOCOL §9), with the browser's
 * `WebSocket`. The credential is the subprotocol pair `["sync.v1", "bearer.<jwt>"]`
 * (browsers cannot set headers; the token never goes in the URL).
 *
 * `connectWebSocket` opens a session (`hello`, `welcome`) and returns a `LiveTransport`:
 * - `pull` hands out the `changes` frames the server streams, in order; it answers
 *   `more: true` until `synced` arrived and every change this session pushed came back
 *   on the stream, then `more: false` whenever nothing is buffered. `reset` becomes
 *   `{reset: true}`; a frame's `unavailable` stays on its page.
 * - `push` sends `push` with a fresh correlation id and waits for its `push_result`
 *   (or `error`, thrown as `ServerError`). A push without a result is resent by the
 *   next round after reconnecting: the outbox still holds it, and replays are safe.
 * - `refreshToken` sends `auth`, so a session outlives the token it opened with.
 * - Server `ping`s are answered; a server silent for longer than twice its heartbeat
 *   plus 5 s counts as gone. Memory is bounded: at most `maxBufferedFrames` frames wait;
 *   a client that falls further behind drops them and reconnects from its stored cursor.
 */
import { ServerError, SyncError, TransportError, ProtocolViolation } from "../errors.js";
import type {
  PullRequest,
  PullResponse,
  PushRequest,
  PushResponse,
  WsChanges,
  WsClientMessage,
  WsError,
  WsReset,
  WsServerMessage,
  WsSynced,
} from "../types.js";
import { PROTOCOL_VERSION } from "../types.js";
import { encodeWsClientMessage, parseJson, readWsServerMessage, WireError, WS_SERVER_TYPES } from "../wire.js";
import type { LiveTransport } from "./types.js";

export const WS_PATH = "/v1/sync/ws";
export const SUBPROTOCOL = "sync.v1";

/** Close code -> the HTTP status of the same refusal (PROTOCOL §9.7). */
const CLOSE_STATUS: Record<number, number> = { 4400: 400, 4401: 401, 4403: 403, 4408: 408, 4426: 426, 4429: 429, 1013: 503 };
/** Refusals that heal by reconnecting later (a timeout, a connection limit). */
const RETRYABLE_CLOSES = new Set([4408, 4429]);

/** What `connectWebSocket` needs from a WebSocket class: the browser's, or `ws` in node. */
export type WebSocketLike = {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
};
export type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocketLike;

export interface WebSocketOptions {
  url: string;
  token: string;
  replica: string;
  cursor: string | null;
  collections?: string[] | null;
  WebSocket?: WebSocketConstructor;
  openTimeoutMs?: number;
  pushTimeoutMs?: number;
  maxBufferedFrames?: number;
}

type Buffered = WsChanges | WsSynced | WsReset;

/** `http(s)://host[/prefix]` -> `ws(s)://host[/prefix]/v1/sync/ws`. */
export function wsUrl(url: string): string {
  const base = url.replace(/\/+$/, "");
  if (base.startsWith("https://")) return `wss://${base.slice(8)}${WS_PATH}`;
  if (base.startsWith("http://")) return `ws://${base.slice(7)}${WS_PATH}`;
  if (base.startsWith("ws://") || base.startsWith("wss://")) return base.endsWith(WS_PATH) ? base : base + WS_PATH;
  throw new Error(`not an http(s) or ws(s) URL: ${url}`);
}

/** The error a close frame means (PROTOCOL §9.7). */
export function closeError(code: number, reason: string): SyncError {
  const status = CLOSE_STATUS[code];
  if (status === undefined || RETRYABLE_CLOSES.has(code) || status >= 500) {
    return new TransportError(`the server closed the WebSocket: ${code} ${reason}`);
  }
  return new ServerError(status, reason || `ws_${code}`, `closed with ${code}`);
}

export async function connectWebSocket(options: WebSocketOptions): Promise<WebSocketTransport> {
  const Impl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (Impl === undefined) throw new TransportError("this runtime has no WebSocket");
  let socket: WebSocketLike;
  try {
    socket = new Impl(wsUrl(options.url), [SUBPROTOCOL, `bearer.${options.token}`]);
  } catch (exc) {
    throw new TransportError(`WebSocket connect: ${String(exc)}`);
  }
  const transport = new WebSocketTransport(socket, options);
  const timeout = options.openTimeoutMs ?? 10_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      transport.opened,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new TransportError("the server sent no welcome in time")), timeout);
      }),
    ]);
  } catch (exc) {
    await transport.close();
    throw exc;
  } finally {
    clearTimeout(timer);
  }
  return transport;
}

export class WebSocketTransport implements LiveTransport {
  readonly name = "ws";
  /** Resolves on `welcome`; rejects when the server refuses or the socket fails first. */
  readonly opened: Promise<void>;
  private welcomed = false;
  private resolveOpen!: () => void;
  private rejectOpen!: (e: SyncError) => void;
  private refusal: Pick<WsError, "code" | "message" | "retry_after"> | null = null;
  private readonly buffer: Buffered[] = [];
  private readonly pendingPushes = new Map<string, { resolve: (r: PushResponse) => void; reject: (e: Error) => void }>();
  private ids = 0;
  private cursor: string | null;
  private synced = false;
  /** Entities of applied pushes, with their seq, not yet seen again on the stream. */
  private readonly echoes = new Map<string, number>();
  private lagging = false;
  private failure: SyncError | null = null;
  private silenceMs = 60_000;
  private silenceTimer: ReturnType<typeof setTimeout> | undefined;
  private wakeup: (() => void) | null = null;
  private readonly maxBuffered: number;
  private readonly pushTimeoutMs: number;
  private readonly collections: Set<string> | null;

  constructor(
    private readonly socket: WebSocketLike,
    private readonly options: WebSocketOptions,
  ) {
    this.cursor = options.cursor;
    this.maxBuffered = options.maxBufferedFrames ?? 64;
    this.pushTimeoutMs = options.pushTimeoutMs ?? 120_000;
    this.collections = options.collections ? new Set(options.collections) : null;
    this.opened = new Promise((resolve, reject) => {
      this.resolveOpen = resolve;
      this.rejectOpen = reject;
    });
    this.opened.catch(() => undefined);
    socket.onopen = () => {
      const hello: WsClientMessage = {
        type: "hello",
        versions: [PROTOCOL_VERSION],
        replica: options.replica,
        cursor: options.cursor,
        collections: options.collections ?? null,
        encoding: "json",
      };
      try {
        this.send(hello);
      } catch (exc) {
        // Refused before it left (a replica id the protocol does not allow): as the server would, with 4400.
        if (exc instanceof WireError) this.fail(notSent(exc, CLOSE_STATUS[4400]!));
      }
    };
    socket.onmessage = (ev) => this.onMessage(ev.data);
    socket.onerror = () => undefined; // a close event always follows, with the code
    socket.onclose = (ev) => {
      const error =
        this.refusal && !this.welcomed
          ? refusalError(ev.code, this.refusal)
          : ev.code === 1006 || ev.code === 1005
            ? new TransportError("the WebSocket dropped without a close frame")
            : closeError(ev.code, ev.reason);
      this.fail(error);
    };
  }

  // --- Transport ---------------------------------------------------------------

  async push(request: PushRequest): Promise<PushResponse> {
    this.raiseIfFailed();
    const id = `p-${++this.ids}`;
    let frame: string;
    try {
      frame = encodeWsClientMessage({ type: "push", id, replica: request.replica, changes: request.changes });
    } catch (exc) {
      // The server would refuse it with an `error` for this push and keep the session open.
      throw exc instanceof WireError ? notSent(exc, requestStatus(exc.code)) : exc;
    }
    const response = await new Promise<PushResponse>((resolve, reject) => {
      const timer = setTimeout(() => {
        const error = new TransportError(`no push_result for ${id} within ${this.pushTimeoutMs} ms`);
        this.fail(error);
        reject(error);
      }, this.pushTimeoutMs);
      this.pendingPushes.set(id, {
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.transmit(frame);
    }).finally(() => this.pendingPushes.delete(id));
    request.changes.forEach((change, i) => {
      const result = response.results[i];
      if (result?.status === "applied" && (this.collections === null || this.collections.has(change.collection))) {
        const key = entityKey(change.collection, change.entity);
        this.echoes.set(key, Math.max(this.echoes.get(key) ?? 0, result.seq));
      }
    });
    return response;
  }

  /** The next page of the stream; `request.cursor` must be where the last page ended. */
  async pull(request: PullRequest): Promise<PullResponse> {
    if (request.cursor !== this.cursor) {
      // The client dropped or replaced its state: the stream no longer continues it.
      this.fail(new TransportError("the client's cursor left this session's stream; reconnecting"));
    }
    for (;;) {
      this.raiseIfFailed();
      if (this.lagging) {
        this.fail(new TransportError("fell behind the server's stream; reconnecting from the cursor"));
        continue;
      }
      const frame = this.buffer.shift();
      if (frame !== undefined) {
        if (frame.type === "reset") {
          this.cursor = null;
          this.synced = false;
          return { changes: [], cursor: null, more: false, reset: true, evictions: [], protocol: 1 };
        }
        if (frame.type === "synced") {
          this.synced = true;
          this.cursor = frame.cursor ?? this.cursor;
          if (!this.buffer.length && this.caughtUp()) return page(this.cursor, false);
          continue;
        }
        this.cursor = frame.cursor;
        for (const view of frame.changes) {
          const key = entityKey(view.collection, view.entity);
          if (view.seq >= (this.echoes.get(key) ?? Infinity)) this.echoes.delete(key);
        }
        for (const gone of frame.evictions) this.echoes.delete(entityKey(gone.collection, gone.entity));
        // A pushed entity the server cannot read comes back named, not as a view: no echo to wait for.
        for (const bad of frame.unavailable ?? []) this.echoes.delete(entityKey(bad.collection, bad.entity));
        const next = this.buffer[0];
        if (next?.type === "synced") {
          this.buffer.shift(); // fold catch-up's end into this page: no empty round
          this.synced = true;
          this.cursor = next.cursor ?? this.cursor;
        }
        const more = this.buffer.length > 0 || !this.caughtUp();
        const out: PullResponse = { ...page(this.cursor, more), changes: frame.changes, evictions: frame.evictions };
        if (frame.unavailable) out.unavailable = frame.unavailable;
        return out;
      }
      if (this.caughtUp()) return page(this.cursor, false);
      if (!(await this.waitForFrame(this.silenceMs))) {
        this.fail(new TransportError(`the stream stalled for ${this.silenceMs} ms before catching up`));
      }
    }
  }

  async waitForChanges(maxWaitMs: number): Promise<boolean> {
    this.raiseIfFailed();
    if (this.buffer.length || this.lagging) return true;
    await this.waitForFrame(maxWaitMs);
    this.raiseIfFailed();
    return this.buffer.length > 0 || this.lagging;
  }

  refreshToken(token: string): Promise<void> {
    try {
      this.raiseIfFailed();
      this.send({ type: "auth", token });
    } catch (exc) {
      return Promise.reject(exc instanceof Error ? exc : new Error(String(exc)));
    }
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.fail(new TransportError("the WebSocket transport is closed"));
    return Promise.resolve();
  }

  // --- session -----------------------------------------------------------------

  private caughtUp(): boolean {
    return this.synced && this.echoes.size === 0;
  }

  private onMessage(data: unknown): void {
    if (typeof data !== "string") {
      this.fail(new ProtocolViolation("the server sent a binary frame to a JSON session"));
      return;
    }
    let value: unknown;
    try {
      value = parseJson(data);
    } catch (exc) {
      this.fail(new ProtocolViolation(`the server sent a message that is not JSON: ${String(exc)}`));
      return;
    }
    this.armSilence();
    if (isObject(value) && typeof value["type"] === "string" && !WS_SERVER_TYPES.has(value["type"])) {
      return; // a message type a newer server may add
    }
    let message: WsServerMessage;
    try {
      message = readWsServerMessage(value);
    } catch (exc) {
      this.fail(new ProtocolViolation(`the server sent a message protocol v1 does not allow: ${String(exc)}`));
      return;
    }
    switch (message.type) {
      case "welcome":
        if (this.welcomed) return this.fail(new ProtocolViolation("a second welcome in one session"));
        if (message.version !== PROTOCOL_VERSION) {
          return this.fail(new ProtocolViolation(`the server chose protocol version ${message.version}`));
        }
        this.welcomed = true;
        // Silence beyond twice the heartbeat, plus slack for a busy server, means a dead peer.
        this.silenceMs = 2 * message.heartbeat_ms + 5_000;
        this.armSilence();
        this.resolveOpen();
        return;
      case "changes":
      case "synced":
      case "reset":
        if (this.lagging) return; // dropped: the reconnect re-reads the log from the client's cursor
        if (message.type === "changes" && this.buffer.length >= this.maxBuffered) {
          this.buffer.length = 0;
          this.lagging = true;
        } else {
          this.buffer.push(message); // members a newer server left out have their defaults (readWsServerMessage)
        }
        this.wake();
        return;
      case "push_result":
        this.pendingPushes.get(message.id)?.resolve({ results: message.results, protocol: message.protocol });
        return;
      case "error": {
        const pending = message.id ? this.pendingPushes.get(message.id) : undefined;
        if (pending) {
          const retryAfter = message.retry_after ?? null;
          pending.reject(new ServerError(requestStatus(message.code), message.code, message.message, retryAfter));
        } else if (!this.welcomed) this.refusal = message;
        else console.warn(`syncclient: server error on the live channel: ${message.code}: ${message.message}`);
        return;
      }
      case "ping":
        this.send({ type: "pong", id: message.id });
        return;
      case "pong":
        return;
    }
  }

  /** Sends a client message; throws `WireError` (sending nothing) unless the server's decoder would accept it. */
  private send(message: WsClientMessage): void {
    this.transmit(encodeWsClientMessage(message));
  }

  private transmit(frame: string): void {
    try {
      this.socket.send(frame);
    } catch (exc) {
      const error = new TransportError(`WebSocket send: ${String(exc)}`);
      this.fail(error);
      throw error;
    }
  }

  private armSilence(): void {
    clearTimeout(this.silenceTimer);
    if (this.failure) return;
    this.silenceTimer = setTimeout(
      () => this.fail(new TransportError(`the server was silent for ${this.silenceMs} ms`)),
      this.silenceMs,
    );
  }

  private waitForFrame(withinMs: number): Promise<boolean> {
    if (this.buffer.length || this.lagging || this.failure) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wakeup = null;
        resolve(false);
      }, withinMs);
      this.wakeup = () => {
        clearTimeout(timer);
        this.wakeup = null;
        resolve(true);
      };
    });
  }

  private wake(): void {
    this.wakeup?.();
  }

  private fail(error: SyncError): void {
    if (this.failure === null) this.failure = error;
    clearTimeout(this.silenceTimer);
    this.rejectOpen(this.failure);
    for (const pending of this.pendingPushes.values()) pending.reject(this.failure);
    this.pendingPushes.clear();
    this.wake();
    if (this.socket.readyState <= 1) {
      try {
        this.socket.close(1000);
      } catch {
        // already closing
      }
    }
  }

  private raiseIfFailed(): void {
    if (this.failure !== null) throw this.failure;
  }
}

function page(cursor: string | null, more: boolean): PullResponse {
  return { changes: [], cursor, more, reset: false, evictions: [], protocol: 1 };
}

function entityKey(collection: string, entity: string): string {
  return `${collection}\u0000${entity}`;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A message refused before it was sent, as the error the server would have answered. */
function notSent(error: WireError, status: number): ServerError {
  return new ServerError(status, error.code, `not sent: ${error.message}`);
}

function refusalError(code: number, refusal: Pick<WsError, "code" | "message" | "retry_after">): SyncError {
  if (RETRYABLE_CLOSES.has(code)) return new TransportError(`${code} ${refusal.code}: ${refusal.message}`);
  const status = CLOSE_STATUS[code] ?? requestStatus(refusal.code);
  return new ServerError(status, refusal.code, refusal.message, refusal.retry_after ?? null);
}

/** The HTTP status a request-level `error` would have over HTTP (PROTOCOL §6). */
function requestStatus(code: string): number {
  const table: Record<string, number> = {
    malformed_json: 400,
    invalid_request: 422,
    unknown_op: 422,
    body_too_large: 413,
    too_many_changes: 413,
    unauthorized: 401,
    token_expired: 401,
    tenant_unknown: 401,
    forbidden: 403,
    replica_forbidden: 403,
    invalid_cursor: 400,
    rate_limited: 429,
    internal: 500,
    unavailable: 503,
  };
  return table[code] ?? 400;
}
