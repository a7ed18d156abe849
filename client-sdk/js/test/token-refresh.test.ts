/**
 * The token refresh timer never spins: a provider that hands back a token already within a minute of its
 * `exp` (a short lifetime, or the stale token an app returns offline) is asked again after a retry delay
 * (30 s and up), not at once, and only a token that changed wakes the sync loop. On a fake clock.
 */
import { afterEach, describe, expect, it, vi } from "vitest";

import { SyncClient } from "../src/client.js";
import { advance, settle, useFakeClock } from "./fake-clock.js";
import { FakeServer, freshDb } from "./fake-server.js";
import { jwt } from "./fake-ws.js";

afterEach(() => {
  vi.useRealTimers();
});

const nowS = (): number => Math.floor(Date.now() / 1000);

describe("token refresh", () => {
  it("with 30-second tokens, neither the provider nor the server is hit in a loop", async () => {
    useFakeClock();
    const server = new FakeServer();
    let calls = 0;
    const client = await SyncClient.open({
      url: "http://sync.test",
      token: () => {
        calls++;
        return jwt({ sub: "driver-1", exp: nowS() + 30, jti: `t${calls}` });
      },
      dbName: freshDb(),
      fetch: server.fetch,
      transport: "http",
      syncIntervalMs: 30_000,
    });
    await client.start();
    await advance(120_000, 100);
    // The loop polls every 30 s: about 5 rounds in 2 minutes; each request may ask for a fresh token (it is
    // always within 30 s of exp), plus the timer's attempts 30 s apart and more.
    expect(server.pulls.length).toBeGreaterThanOrEqual(4);
    expect(server.pulls.length).toBeLessThanOrEqual(8);
    expect(calls).toBeLessThanOrEqual(3 * server.pulls.length + 6);
    await settle(client.close());
  });

  it("offline, a provider that hands back the same stale token is asked again with backoff, and the loop's backoff holds", async () => {
    useFakeClock();
    const server = new FakeServer();
    const saved = jwt({ sub: "driver-1", exp: nowS() + 61 }); // valid now, due for refresh in about 1 s
    let offline = false;
    let attempts = 0;
    let calls = 0;
    const client = await SyncClient.open({
      url: "http://sync.test",
      token: () => {
        calls++;
        return saved;
      },
      dbName: freshDb(),
      fetch: (input, init) => {
        if (!offline) return server.fetch(input, init);
        attempts++;
        return Promise.reject(new TypeError("Failed to fetch"));
      },
      transport: "http",
      syncIntervalMs: 30_000,
    });
    await client.start();
    await advance(200);
    expect(server.pulls).toHaveLength(1);
    offline = true;
    calls = 0;
    await advance(60_000, 100);
    // The loop's backoff (0.5 s doubling, jittered) allows about 8 attempts in a minute. The timer asks the
    // provider at about 1 s, then 30-60 s later; a request asks too once the token is within 30 s of exp.
    expect(attempts).toBeGreaterThanOrEqual(3);
    expect(attempts).toBeLessThanOrEqual(12);
    expect(calls).toBeGreaterThanOrEqual(1);
    expect(calls).toBeLessThanOrEqual(attempts + 2);
    await settle(client.close());
  });

  it("a token good for longer re-arms the timer for a minute before its own exp", async () => {
    useFakeClock();
    const server = new FakeServer();
    const issuedAt: number[] = [];
    const client = await SyncClient.open({
      url: "http://sync.test",
      token: () => {
        issuedAt.push(Date.now());
        return jwt({ sub: "driver-1", exp: nowS() + 300, jti: `t${issuedAt.length}` });
      },
      dbName: freshDb(),
      fetch: server.fetch,
      transport: "http",
      syncIntervalMs: 600_000,
    });
    const start = Date.now();
    await client.start();
    await advance(900_000, 1_000);
    // Issued at 0, then refreshed 4 minutes into each 5-minute token: 240 s, 480 s, 720 s.
    const at = issuedAt.map((t) => (t - start) / 1000);
    expect(at).toHaveLength(4);
    [0, 240, 480, 720].forEach((s, i) => expect(Math.abs(at[i]! - s)).toBeLessThanOrEqual(2)); // exp is in whole seconds
    await settle(client.close());
  });
});
