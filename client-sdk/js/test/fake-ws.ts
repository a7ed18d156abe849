/**
 * A tiny protocol v1 WebSocket server inside the test: applies pushes in counter order and
 * echoes them on the stream. Its sockets stand in for the browser's `WebSocket`. Knobs:
 * the heartbeat it announces, whether it pings, and whether it closes a session with 4401
 * when the session's token expires (PROTOCOL §9.1), as a real server does.
 */
import type { Change, WsClientMessage, WsServerMessage } from "../src/types.js";
import type { WebSocketLike } from "../src/transport/ws.js";

export class WsServer {
  readonly sockets: FakeSocket[] = [];
  readonly log: Change[] = [];
  readonly expired = new Set<string>();
  readonly auths: string[] = [];
  /** when each `auth` arrived (`Date.now()`) */
  readonly authAt: number[] = [];
  /** close codes the server sent */
  readonly closes: number[] = [];
  hwm = 0;
  /** `welcome.heartbeat_ms` */
  heartbeatMs = 20_000;
  /** ping every `heartbeatMs` (off: nothing after the handshake, as a server that went silent) */
  pings = false;
  /** close with 4401 `token_expired` when the session's token's `exp` passes, unless `auth` brought a fresh one */
  enforceExpiry = false;

  get Socket(): new (url: string, protocols: string[]) => FakeSocket {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const server = this;
    return class extends FakeSocket {
      constructor(url: string, protocols: string[]) {
        super(url, protocols, server);
      }
    };
  }

  handle(socket: FakeSocket, m: WsClientMessage): void {
    switch (m.type) {
      case "hello":
        socket.welcomedAt = Date.now();
        socket.serve({ type: "welcome", version: 1, encoding: "json", cursor: m.cursor, heartbeat_ms: this.heartbeatMs, idle_timeout_ms: 60_000 });
        socket.serve({ type: "synced", cursor: `c${this.log.length}` });
        if (this.pings) socket.startPings(this.heartbeatMs);
        return;
      case "push": {
        const results = m.changes.map((c) => {
          if (c.n <= this.hwm) return { status: "duplicate" as const, id: c.id, n: c.n };
          this.hwm = c.n;
          this.log.push(c);
          return { status: "applied" as const, id: c.id, n: c.n, seq: this.log.length };
        });
        socket.serve({ type: "push_result", id: m.id, results, protocol: 1 });
        for (const c of m.changes) {
          const seq = this.log.indexOf(c) + 1 || this.log.length;
          socket.serve({
            type: "changes",
            changes: [{ collection: c.collection, entity: c.entity, seq, vv: { [m.replica]: c.n }, deleted: false, fields: {} }],
            cursor: `c${seq}`,
            more: false,
            evictions: [],
          });
        }
        return;
      }
      case "auth":
        this.auths.push(m.token);
        this.authAt.push(Date.now());
        if (this.enforceExpiry) socket.expireWith(m.token);
        return;
      case "ping":
        socket.serve({ type: "pong", id: m.id ?? null });
        return;
      default:
        return;
    }
  }

  /** The server closes every open session: the token expired (PROTOCOL §9.1). */
  expireAll(): void {
    for (const s of this.sockets) {
      if (s.readyState === 1) {
        this.expired.add(s.token);
        s.readyState = 3;
        s.onclose?.({ code: 4401, reason: "token_expired" });
      }
    }
  }
}

/** The `exp` claim of a JWT, read without the SDK's code. */
function expiry(token: string): number | null {
  try {
    const claims = JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString()) as { exp?: unknown };
    return typeof claims.exp === "number" ? claims.exp : null;
  } catch {
    return null;
  }
}

/** An unsigned JWT with these claims (the fake server does not check signatures). */
export function jwt(claims: Record<string, unknown>): string {
  const part = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString("base64url");
  return `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}.c2ln`;
}

export class FakeSocket implements WebSocketLike {
  readyState = 0;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  readonly token: string;
  /** when the server answered `hello` (`Date.now()`) */
  welcomedAt: number | null = null;
  /** when the client closed this socket (`Date.now()`), if it did */
  closedByClientAt: number | null = null;
  private pingTimer: ReturnType<typeof setTimeout> | undefined;
  private expiryTimer: ReturnType<typeof setTimeout> | undefined;
  private pings = 0;

  constructor(
    readonly url: string,
    readonly protocols: string[],
    private readonly server: WsServer,
  ) {
    this.token = (protocols.find((p) => p.startsWith("bearer.")) ?? "").slice(7);
    server.sockets.push(this);
    setTimeout(() => {
      if (server.expired.has(this.token)) {
        this.readyState = 1;
        this.serve({ type: "error", code: "token_expired", message: "expired", id: null });
        this.readyState = 3;
        this.onclose?.({ code: 4401, reason: "token_expired" });
        return;
      }
      this.readyState = 1;
      if (server.enforceExpiry) this.expireWith(this.token);
      this.onopen?.({});
    }, 0);
  }

  send(data: string): void {
    const message = JSON.parse(data) as WsClientMessage;
    setTimeout(() => this.server.handle(this, message), 0);
  }

  close(): void {
    if (this.readyState > 1) return;
    this.readyState = 3;
    this.closedByClientAt = Date.now();
    this.stopTimers();
    setTimeout(() => this.onclose?.({ code: 1000, reason: "" }), 0);
  }

  serve(message: WsServerMessage): void {
    if (this.readyState === 1) this.onmessage?.({ data: JSON.stringify(message) });
  }

  startPings(everyMs: number): void {
    const tick = (): void => {
      if (this.readyState !== 1) return;
      this.serve({ type: "ping", id: `ping-${++this.pings}` });
      this.pingTimer = setTimeout(tick, everyMs);
    };
    this.pingTimer = setTimeout(tick, everyMs);
  }

  /** The session now runs on `token`: close it with 4401 when that token's `exp` passes. */
  expireWith(token: string): void {
    clearTimeout(this.expiryTimer);
    const exp = expiry(token);
    if (exp === null) return;
    this.expiryTimer = setTimeout(() => this.closeByServer(4401, "token_expired"), Math.max(0, exp * 1000 - Date.now()));
  }

  private closeByServer(code: number, reason: string): void {
    if (this.readyState !== 1) return;
    this.serve({ type: "error", code: reason, message: "the session's token expired", id: null });
    this.readyState = 3;
    this.stopTimers();
    this.server.closes.push(code);
    this.onclose?.({ code, reason });
  }

  private stopTimers(): void {
    clearTimeout(this.pingTimer);
    clearTimeout(this.expiryTimer);
  }
}
