/** The sync loop on the WebSocket channel: live sync, token expiry mid-session, refresh on the open socket. */
import { describe, expect, it } from "vitest";

import { Backoff } from "../src/backoff.js";
import { SyncClient } from "../src/client.js";
import { FakeServer, freshDb, until } from "./fake-server.js";
import { WsServer } from "./fake-ws.js";

describe("the live sync loop", () => {
  it("pushes over the WebSocket, and after the token expires mid-session reconnects with a fresh one, losing no write", async () => {
    const server = new WsServer();
    let calls = 0;
    const client = await SyncClient.open({
      url: "http://sync.test",
      token: () => `tok-${++calls}`,
      dbName: freshDb(),
      transport: "ws",
      WebSocket: server.Socket,
      backoff: new Backoff(0.01, 0.05),
    });
    const d = client.collection("deliveries");
    await client.start();
    await until(() => client.status().connection === "live");
    await d.set("dlv-1", { status: "out_for_delivery" });
    await until(() => server.log.length === 1);

    server.expireAll();
    await d.set("dlv-1", { status: "delivered" }); // written while the session is gone
    await until(() => server.log.length === 2);
    expect(server.log.map((c) => c.n)).toEqual([1, 2]);
    expect(server.sockets.map((s) => s.protocols)).toEqual([
      ["sync.v1", "bearer.tok-1"],
      ["sync.v1", "bearer.tok-2"],
    ]);
    await until(() => client.status().connection === "live");
    expect(await client.pendingCount()).toBe(0);

    await client.setToken("tok-manual"); // refreshed on the open socket, no reconnect
    await until(() => server.auths.includes("tok-manual"));
    expect(server.sockets).toHaveLength(2);
    await client.close();
  });
});

describe("a server that refuses every token", () => {
  it("is retried once at once, then with backoff, not in a tight loop", async () => {
    const server = new WsServer();
    let calls = 0;
    const client = await SyncClient.open({
      url: "http://sync.test",
      token: () => {
        const token = `bad-${++calls}`;
        server.expired.add(token); // refused at the handshake, like an unknown tenant
        return token;
      },
      dbName: freshDb(),
      transport: "ws",
      WebSocket: server.Socket,
      backoff: new Backoff(0.2, 0.4),
    });
    await client.start();
    await until(() => client.status().connection === "offline" && server.sockets.length >= 2);
    await new Promise((r) => setTimeout(r, 150));
    expect(server.sockets.length).toBeLessThanOrEqual(3); // one retry at once, then waits of 0.2-0.4 s
    expect(client.status().lastError).toContain("token_expired");
    await client.close();
  });
});

describe("a live channel refused while HTTP works", () => {
  it("is set aside 1 s, then 4 times longer per refusal in a row, and retried at once on `online`", async () => {
    const http = new FakeServer();
    let opened = 0;
    let refuse = true;
    const ws = new WsServer();
    class Flaky extends ws.Socket {
      constructor(url: string, protocols: string[]) {
        super(url, protocols);
        opened++;
        if (refuse) {
          this.readyState = 3;
          setTimeout(() => this.onclose?.({ code: 1006, reason: "" }), 0);
        }
      }
    }
    const events = new EventTarget();
    const g = globalThis as unknown as { addEventListener: EventTarget["addEventListener"] };
    const saved = g.addEventListener;
    g.addEventListener = events.addEventListener.bind(events);
    try {
      const client = await SyncClient.open({
        url: "http://sync.test",
        token: "tok",
        dbName: freshDb(),
        fetch: http.fetch,
        WebSocket: Flaky,
        backoff: new Backoff(0.01, 0.05),
      });
      await client.start();
      await until(() => client.status().connection === "http" && opened === 1);
      await until(() => opened === 2, 3000); // retried after about 1 s, not 5 min
      await new Promise((r) => setTimeout(r, 1500));
      expect(opened).toBe(2); // the second refusal sets it aside 4 s

      refuse = false;
      events.dispatchEvent(new Event("online")); // the network came back: try live at once
      await until(() => client.status().connection === "live", 2000);
      expect(opened).toBe(3);
      await client.close();
    } finally {
      g.addEventListener = saved;
    }
  });
});
