/** The WebSocket transport (PROTOCOL §9) against a scripted socket: credential, handshake, stream, push, closes. */
import { afterEach, describe, expect, it, vi } from "vitest";

import { ProtocolViolation, ServerError, TransportError } from "../src/errors.js";
import type { WsClientMessage, WsServerMessage } from "../src/types.js";
import { closeError, connectWebSocket, wsUrl, type WebSocketLike } from "../src/transport/ws.js";
import { advanceUntil, useFakeClock } from "./fake-clock.js";
import { until } from "./fake-server.js";

/** A socket whose server side the test plays: `sent` holds what the client sent, `serve` answers. */
class ScriptedSocket implements WebSocketLike {
  static last: ScriptedSocket | null = null;
  readyState = 0;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  readonly sent: WsClientMessage[] = [];

  constructor(
    readonly url: string,
    readonly protocols: string[],
  ) {
    ScriptedSocket.last = this;
    setTimeout(() => {
      this.readyState = 1;
      this.onopen?.({});
    }, 0);
  }

  send(data: string): void {
    this.sent.push(JSON.parse(data) as WsClientMessage);
  }

  close(code = 1000, reason = ""): void {
    if (this.readyState > 1) return;
    this.readyState = 3;
    setTimeout(() => this.onclose?.({ code, reason }), 0);
  }

  serve(message: WsServerMessage): void {
    this.onmessage?.({ data: JSON.stringify(message) });
  }
}

const welcome: WsServerMessage = {
  type: "welcome",
  version: 1,
  encoding: "json",
  cursor: "c0",
  heartbeat_ms: 20_000,
  idle_timeout_ms: 60_000,
};

async function connected(cursor: string | null = "c0") {
  const pending = connectWebSocket({
    url: "https://sync.example.com/base/",
    token: "eyJ.jwt.sig",
    replica: "web-1",
    cursor,
    WebSocket: ScriptedSocket,
  });
  await until(() => (ScriptedSocket.last?.sent.length ?? 0) > 0);
  const socket = ScriptedSocket.last!;
  socket.serve(welcome);
  return { transport: await pending, socket };
}

describe("the WebSocket transport", () => {
  it("offers the browser credential as subprotocols, never in the URL, and says hello with the cursor", async () => {
    const { transport, socket } = await connected();
    expect(socket.url).toBe("wss://sync.example.com/base/v1/sync/ws");
    expect(socket.protocols).toEqual(["sync.v1", "bearer.eyJ.jwt.sig"]);
    expect(socket.sent[0]).toEqual({
      type: "hello",
      versions: [1],
      replica: "web-1",
      cursor: "c0",
      collections: null,
      encoding: "json",
    });
    await transport.close();
  });

  it("serves pull from the stream, answers pings, and ends a pull only after its pushes came back", async () => {
    const { transport, socket } = await connected();
    const view = { collection: "deliveries", entity: "dlv-1", seq: 5, vv: { "web-1": 1 }, deleted: false, fields: {} };
    socket.serve({ type: "changes", changes: [view], cursor: "c5", more: false, evictions: [] });
    socket.serve({ type: "synced", cursor: "c5" });
    socket.serve({ type: "ping", id: "h-1" });
    expect(socket.sent.at(-1)).toEqual({ type: "pong", id: "h-1" });
    const page = await transport.pull({ cursor: "c0", limit: 1000, collections: null });
    expect(page).toMatchObject({ cursor: "c5", more: false, changes: [view] });

    const change = { id: "x", n: 2, collection: "deliveries", entity: "dlv-1", hlc: [1, 0] as [number, number], context: {}, ops: [] };
    const pushed = transport.push({ replica: "web-1", changes: [change] });
    await until(() => socket.sent.at(-1)?.type === "push");
    const push = socket.sent.at(-1) as { id: string };
    socket.serve({ type: "push_result", id: push.id, results: [{ status: "applied", id: "x", n: 2, seq: 6 }], protocol: 1 });
    expect((await pushed).results[0]).toMatchObject({ status: "applied", seq: 6 });
    // The pushed change has not come back on the stream yet: the pull waits for it.
    const next = transport.pull({ cursor: "c5", limit: 1000, collections: null });
    socket.serve({ type: "changes", changes: [{ ...view, seq: 6 }], cursor: "c6", more: false, evictions: [] });
    expect(await next).toMatchObject({ cursor: "c6", more: false });
    expect(await transport.waitForChanges(10)).toBe(false);
    await transport.refreshToken("fresh");
    expect(socket.sent.at(-1)).toEqual({ type: "auth", token: "fresh" });
    await transport.close();
  });

  it("hands a frame's unavailable entities to the page, and does not wait for the echo of one it pushed", async () => {
    const { transport, socket } = await connected();
    socket.serve({ type: "synced", cursor: "c0" });
    expect(await transport.pull({ cursor: "c0", limit: 10, collections: null })).toMatchObject({ more: false });
    const change = { id: "x", n: 1, collection: "deliveries", entity: "dlv-1", hlc: [1, 0] as [number, number], context: {}, ops: [] };
    const pushed = transport.push({ replica: "web-1", changes: [change] });
    await until(() => socket.sent.at(-1)?.type === "push");
    const push = socket.sent.at(-1) as { id: string };
    socket.serve({ type: "push_result", id: push.id, results: [{ status: "applied", id: "x", n: 1, seq: 7 }], protocol: 1 });
    await pushed;
    // The server cannot read dlv-1's state back: the frame names it instead of sending it.
    const bad = { collection: "deliveries", entity: "dlv-1", seq: 7, code: "data_integrity" };
    socket.serve({ type: "changes", changes: [], cursor: "c7", more: false, evictions: [], unavailable: [bad] });
    const page = await transport.pull({ cursor: "c0", limit: 10, collections: null });
    expect(page).toEqual({ changes: [], evictions: [], cursor: "c7", more: false, reset: false, protocol: 1, unavailable: [bad] });
    socket.serve({ type: "changes", changes: [], cursor: "c8", more: false, evictions: [] });
    expect(await transport.pull({ cursor: "c7", limit: 10, collections: null })).not.toHaveProperty("unavailable");
    // An unavailable entry of the wrong shape is a protocol violation, like any other member.
    socket.onmessage?.({ data: JSON.stringify({ type: "changes", changes: [], cursor: "c9", unavailable: [{ ...bad, seq: "7" }] }) });
    await expect(transport.waitForChanges(10)).rejects.toBeInstanceOf(ProtocolViolation);
  });

  it("turns reset into a pull answer that drops synced state", async () => {
    const { transport, socket } = await connected();
    socket.serve({ type: "reset" });
    expect(await transport.pull({ cursor: "c0", limit: 10, collections: null })).toMatchObject({ reset: true, cursor: null });
    await transport.close();
  });

  it("hands a rate_limited push its retry_after, as HTTP's Retry-After", async () => {
    const { transport, socket } = await connected();
    const pushed = transport.push({ replica: "web-1", changes: [] });
    await until(() => socket.sent.at(-1)?.type === "push");
    const push = socket.sent.at(-1) as { id: string };
    socket.serve({ type: "error", code: "rate_limited", message: "slow down", id: push.id, retry_after: 3 });
    await expect(pushed).rejects.toMatchObject({ status: 429, code: "rate_limited", retryAfter: 3 });
    const other = transport.push({ replica: "web-1", changes: [] });
    await until(() => (socket.sent.at(-1) as { id: string }).id !== push.id);
    socket.serve({ type: "error", code: "too_many_changes", message: "split", id: (socket.sent.at(-1) as { id: string }).id });
    await expect(other).rejects.toMatchObject({ status: 413, retryAfter: null });
  });

  it("fails a push in flight when the socket drops, so the next round resends it", async () => {
    const { transport, socket } = await connected();
    const pushed = transport.push({ replica: "web-1", changes: [] });
    socket.readyState = 3;
    socket.onclose?.({ code: 1006, reason: "" });
    await expect(pushed).rejects.toBeInstanceOf(TransportError);
    await expect(transport.waitForChanges(10)).rejects.toBeInstanceOf(TransportError);
  });

  it("reports an expired token (4401) as a 401 to refresh, and a refusal before welcome with its code", async () => {
    const { transport, socket } = await connected();
    socket.readyState = 3;
    socket.onclose?.({ code: 4401, reason: "token_expired" });
    await expect(transport.pull({ cursor: "c0", limit: 1, collections: null })).rejects.toMatchObject({
      status: 401,
      code: "token_expired",
    });
    const refused = connectWebSocket({ url: "http://h", token: "t", replica: "r", cursor: null, WebSocket: ScriptedSocket });
    await until(() => (ScriptedSocket.last?.sent.length ?? 0) > 0);
    ScriptedSocket.last!.serve({ type: "error", code: "version_unsupported", message: "speaks [2]", id: null });
    ScriptedSocket.last!.close(4426, "version_unsupported");
    await expect(refused).rejects.toMatchObject({ status: 426, code: "version_unsupported" });
  });

  it("reads server messages strictly: new types are ignored, a malformed known one ends the session", async () => {
    const { transport, socket } = await connected();
    socket.onmessage?.({ data: JSON.stringify({ type: "presence", who: ["web-2"] }) }); // a newer server's message
    socket.serve({ type: "synced", cursor: "c0" });
    expect(await transport.pull({ cursor: "c0", limit: 10, collections: null })).toMatchObject({ cursor: "c0", more: false });
    socket.onmessage?.({ data: JSON.stringify({ type: "changes", changes: [], more: false }) }); // no cursor
    await expect(transport.waitForChanges(10)).rejects.toBeInstanceOf(ProtocolViolation);
  });

  it("refuses a push the server's decoder would refuse before sending it, and keeps the session", async () => {
    const { transport, socket } = await connected();
    const sent = socket.sent.length;
    await expect(transport.push({ replica: "not a replica id", changes: [] })).rejects.toMatchObject({
      status: 422,
      code: "invalid_request",
    });
    expect(socket.sent).toHaveLength(sent);
    expect(await transport.waitForChanges(10)).toBe(false);
    await transport.close();
  });

  it("maps close codes as PROTOCOL §9.7 says", () => {
    expect(closeError(4429, "too_many_connections")).toBeInstanceOf(TransportError); // retry later
    expect(closeError(1013, "unavailable")).toBeInstanceOf(TransportError);
    expect(closeError(4403, "forbidden")).toMatchObject({ status: 403 });
    expect(closeError(4400, "invalid_cursor")).toBeInstanceOf(ServerError);
    expect(wsUrl("http://127.0.0.1:8000")).toBe("ws://127.0.0.1:8000/v1/sync/ws");
  });
});

describe("a silent server (PROTOCOL §9.5)", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("is gone after twice its heartbeat plus 5 s without a frame; any frame restarts that clock", async () => {
    useFakeClock();
    const pending = connectWebSocket({ url: "http://h", token: "t", replica: "web-1", cursor: null, WebSocket: ScriptedSocket });
    await advanceUntil(() => (ScriptedSocket.last?.sent.length ?? 0) > 0, 1_000);
    const socket = ScriptedSocket.last!;
    socket.serve({ ...welcome, heartbeat_ms: 100 }); // silence beyond 2 * 100 + 5000 ms ends the session
    const transport = await pending;
    let failure: unknown = null;
    transport.waitForChanges(600_000).then(
      () => (failure = "resolved"),
      (exc: unknown) => (failure = exc),
    );

    await vi.advanceTimersByTimeAsync(3_000);
    socket.serve({ type: "ping", id: "h-1" }); // a heartbeat: alive
    expect(socket.sent.at(-1)).toEqual({ type: "pong", id: "h-1" });
    await vi.advanceTimersByTimeAsync(5_199);
    expect(failure).toBeNull();
    expect(socket.readyState).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(failure).toBeInstanceOf(TransportError);
    expect(String(failure)).toMatch(/silent for 5200 ms/);
    expect(socket.readyState).toBe(3); // the client closed it
  });
});
