/**
 * The live channel's clocks (PROTOCOL §9.5, §9.9), on a fake clock: a server silent for longer than
 * twice its heartbeat plus 5 s counts as gone and the client reconnects; a token is refreshed on the
 * open socket (`auth`) before it expires, so the server never closes the session with 4401.
 */
import { afterEach, describe, expect, it, vi } from "vitest";

import { Backoff } from "../src/backoff.js";
import { SyncClient } from "../src/client.js";
import type { SyncEvent } from "../src/events.js";
import { advance, advanceUntil, settle, useFakeClock } from "./fake-clock.js";
import { freshDb } from "./fake-server.js";
import { jwt, WsServer } from "./fake-ws.js";

afterEach(() => {
  vi.useRealTimers();
});

describe("a server that goes silent after its welcome", () => {
  it("counts as gone after twice its heartbeat plus 5 s, and the client reconnects", async () => {
    useFakeClock();
    const server = new WsServer();
    server.heartbeatMs = 100; // silence beyond 2 * 100 + 5000 ms means a dead peer
    const client = await SyncClient.open({
      url: "http://sync.test",
      token: "tok",
      dbName: freshDb(),
      transport: "ws",
      WebSocket: server.Socket,
      backoff: new Backoff(0.01, 0.05),
    });
    const events: SyncEvent[] = [];
    client.subscribe((e) => events.push(e));
    await client.start();
    await advanceUntil(() => client.status().connection === "live", 1_000);

    await advance(5_000); // silent, but not for long enough
    expect(server.sockets).toHaveLength(1);
    expect(client.status().connection).toBe("live");

    // The loop idles up to its 30 s interval: only the silence timer ends this session.
    await advanceUntil(() => server.sockets.length === 2, 2_000);
    const first = server.sockets[0]!;
    const silentFor = first.closedByClientAt! - first.welcomedAt!;
    expect(silentFor).toBeGreaterThanOrEqual(5_200);
    expect(silentFor).toBeLessThanOrEqual(5_200 + 10); // a step of the fake clock
    const offline = events.find((e) => e.type === "connection" && e.state === "offline");
    expect(offline).toMatchObject({ error: expect.stringMatching(/silent for 5200 ms/) as unknown });
    await advanceUntil(() => client.status().connection === "live", 1_000);
    expect(server.sockets).toHaveLength(2);

    await settle(client.close());
  });
});

describe("a token near its expiry", () => {
  it("is refreshed on the open socket with `auth` before the server would close the session with 4401", async () => {
    useFakeClock();
    const server = new WsServer();
    server.pings = true; // a live server: the session stays up on heartbeats
    server.enforceExpiry = true; // and ends with 4401 when its token expires
    const issued: { token: string; exp: number }[] = [];
    const client = await SyncClient.open({
      url: "http://sync.test",
      token: () => {
        const exp = Math.floor(Date.now() / 1000) + 120; // two minutes, as short-lived tokens are
        const token = jwt({ sub: "driver-1", exp, jti: `t${issued.length + 1}` });
        issued.push({ token, exp });
        return token;
      },
      dbName: freshDb(),
      transport: "ws",
      WebSocket: server.Socket,
      backoff: new Backoff(0.01, 0.05),
    });
    const d = client.collection("deliveries");
    await client.start();
    await advanceUntil(() => client.status().connection === "live", 1_000);
    await d.set("dlv-1", { status: "out_for_delivery" });
    await advanceUntil(() => server.log.length === 1, 1_000);

    await advance(150_000, 100); // past the first token's exp
    expect(server.closes).toEqual([]); // no 4401
    expect(server.sockets).toHaveLength(1); // no reconnect
    expect(server.sockets[0]!.token).toBe(issued[0]!.token);
    expect(server.auths.length).toBeGreaterThanOrEqual(1);
    expect(server.auths).toEqual(issued.slice(1, server.auths.length + 1).map((t) => t.token));
    // Each fresh token reached the socket before the one it replaced expired.
    server.authAt.forEach((at, i) => expect(at).toBeLessThan(issued[i]!.exp * 1000));
    expect(client.status().connection).toBe("live");

    await d.set("dlv-1", { status: "delivered" }); // the same session carries on
    await advanceUntil(() => server.log.length === 2, 1_000);
    expect(server.log.map((c) => c.n)).toEqual([1, 2]);
    expect(server.sockets).toHaveLength(1);
    expect(server.closes).toEqual([]);

    await settle(client.close());
  });
});
