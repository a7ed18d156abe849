/** Retry delays: exponential backoff with equal jitter, and the sync loop waiting out the server's `Retry-After`. */
import { afterEach, describe, expect, it, vi } from "vitest";

import { Backoff } from "../src/backoff.js";
import { SyncClient } from "../src/client.js";
import type { SyncEvent } from "../src/events.js";
import { advance, advanceUntil, settle, useFakeClock } from "./fake-clock.js";
import { FakeServer, freshDb, json } from "./fake-server.js";

afterEach(() => {
  vi.useRealTimers();
});

function delays(backoff: Backoff, count: number): number[] {
  return Array.from({ length: count }, () => backoff.next());
}

describe("Backoff", () => {
  it("waits half the doubled delay at the low end of the jitter, up to half the cap", () => {
    expect(delays(new Backoff(0.5, 60, () => 0), 10)).toEqual([0.25, 0.5, 1, 2, 4, 8, 16, 30, 30, 30]);
  });

  it("waits the whole doubled delay at the high end of the jitter, up to the cap", () => {
    expect(delays(new Backoff(0.5, 60, () => 1), 10)).toEqual([0.5, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
  });

  it("stays within [d/2, d] for any draw, and at the cap however many failures in a row", () => {
    const b = new Backoff(0.5, 60, () => 0.5);
    expect(delays(b, 3)).toEqual([0.375, 0.75, 1.5]);
    const many = delays(new Backoff(0.5, 60, () => 1), 200);
    expect(many.slice(7).every((d) => d === 60)).toBe(true); // no overflow to Infinity or NaN
    const random = new Backoff(0.5, 60);
    for (const [attempt, d] of delays(random, 12).entries()) {
      const full = Math.min(60, 0.5 * 2 ** attempt);
      expect(d).toBeGreaterThanOrEqual(full / 2);
      expect(d).toBeLessThanOrEqual(full);
    }
  });

  it("starts again from the base after reset", () => {
    const b = new Backoff(0.5, 60, () => 1);
    delays(b, 5);
    b.reset();
    expect(delays(b, 2)).toEqual([0.5, 1]);
  });

  it("honours Retry-After, plus at most 10 % jitter, never less", () => {
    expect(new Backoff(0.5, 60, () => 0).retryAfter(7)).toBe(7);
    expect(new Backoff(0.5, 60, () => 1).retryAfter(7)).toBeCloseTo(7.7, 10);
    const random = new Backoff();
    for (let i = 0; i < 100; i++) {
      const d = random.retryAfter(7);
      expect(d).toBeGreaterThanOrEqual(7);
      expect(d).toBeLessThanOrEqual(7.7);
    }
  });
});

describe("the sync loop after a 429 with Retry-After", () => {
  it("pushes again no earlier than the server asked, not after its own short backoff, and the change is applied once", async () => {
    useFakeClock();
    const server = new FakeServer();
    const pushedAt: number[] = [];
    server.intercept = (path) => {
      if (path !== "/v1/sync/push") return undefined;
      pushedAt.push(Date.now());
      if (pushedAt.length > 1) return undefined; // the normal logic
      return json({ error: { code: "rate_limited", message: "slow down" } }, 429, { "Retry-After": "1" });
    };
    const client = await SyncClient.open({
      url: "http://sync.test",
      token: "t0",
      dbName: freshDb(),
      fetch: server.fetch,
      transport: "http",
      backoff: new Backoff(0.01, 0.05), // a retry without Retry-After would come within 50 ms
    });
    const events: SyncEvent[] = [];
    client.subscribe((e) => events.push(e));
    await client.collection("deliveries").set("dlv-1", { status: "delivered" });
    await client.start();

    await advanceUntil(() => server.log.length === 1, 5_000);
    expect(pushedAt).toHaveLength(2);
    const waited = pushedAt[1]! - pushedAt[0]!;
    expect(waited).toBeGreaterThanOrEqual(1_000);
    expect(waited).toBeLessThanOrEqual(1_100 + 50); // Retry-After plus at most 10 %, and a step of the fake clock
    const offline = events.find((e) => e.type === "connection" && e.state === "offline");
    expect(offline).toMatchObject({ error: expect.stringContaining("429") as unknown });
    const retryIn = (offline as { retryIn: number }).retryIn;
    expect(retryIn).toBeGreaterThanOrEqual(1);
    expect(retryIn).toBeLessThanOrEqual(1.1);

    await advance(3_000);
    expect(pushedAt).toHaveLength(2); // nothing pushed twice
    expect(server.log.map((c) => c.n)).toEqual([1]);
    expect(await client.pendingCount()).toBe(0);
    expect(client.status().connection).toBe("http");

    await settle(client.close());
  });
});
