/**
 * An upload request in flight never holds the device: `close()` settles it (tus-js-client's `abort()` never
 * does) and hands the lead to another tab; a request that makes no progress is aborted after the idle timeout,
 * the queue goes on with the next file, and the stalled one is retried later from the server's offset.
 */
import type { HttpRequest, HttpResponse, HttpStack } from "tus-js-client";
import { describe, expect, it } from "vitest";

import { IdleTimeoutHttpStack, UploadStalled } from "../src/attachments-http.js";
import { SyncClient } from "../src/client.js";
import { freshDb, until } from "./fake-server.js";
import { FakeTus } from "./fake-tus.js";

function pathOf(input: RequestInfo | URL): string {
  return new URL(typeof input === "string" ? input : input instanceof URL ? input.href : input.url).pathname;
}

describe("close() with an upload request in flight", () => {
  it("resolves at once, leaves the file queued, and another tab takes over and uploads it", async () => {
    const server = new FakeTus();
    let sent = 0;
    // The first upload request is on a slow link: it settles only when aborted, as a real fetch does.
    const fetchImpl: typeof fetch = (input, init) => {
      if (sent === 0 && pathOf(input).startsWith("/v1/attachments/uploads") && init?.method !== "HEAD") {
        sent++;
        return new Promise((_, reject) => {
          init?.signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
        });
      }
      return server.fetch(input, init);
    };
    const dbName = freshDb();
    const opts = { url: "http://sync.test", token: "t0", dbName, fetch: fetchImpl, transport: "http" as const, attachments: { chunkSize: 1000 } };
    const client = await SyncClient.open(opts);
    const otherTab = await SyncClient.open(opts);
    const ref = await client.attachments.attach("deliveries", "dlv-1", "pod_photo", new Blob([new Uint8Array(2500).fill(7)]), { mediaType: "image/png" });
    await client.start();
    await otherTab.start();
    expect(client.status().leader).toBe(true);
    await until(() => sent === 1);

    let closed = false;
    const closing = client.close().then(() => {
      closed = true;
    });
    await until(() => closed, 2_000);
    await closing;
    await until(() => otherTab.status().leader, 2_000);
    await until(async () => (await otherTab.attachments.status(ref.id))?.state === "uploaded", 5_000);
    expect(server.uploads.get(ref.id)?.offset).toBe(2500);
    await otherTab.close();
  });
});

describe("a stalled upload request", () => {
  it("is aborted after the idle timeout; the next file goes meanwhile, and the stalled one is retried and resumed", async () => {
    const server = new FakeTus();
    let stalls = 0;
    let firstId: string | null = null;
    const fetchImpl: typeof fetch = (input, init) => {
      if (pathOf(input).startsWith("/v1/attachments/uploads") && init?.method === "PATCH" && stalls === 0) {
        stalls++;
        firstId = pathOf(input).split("/").at(-1)!;
        return new Promise(() => undefined); // a half-open connection: no answer, no error, abort ignored
      }
      return server.fetch(input, init);
    };
    const client = await SyncClient.open({
      url: "http://sync.test",
      token: "t0",
      dbName: freshDb(),
      fetch: fetchImpl,
      transport: "http",
      attachments: { chunkSize: 1000, idleTimeoutMs: 300 },
    });
    const a = await client.attachments.attach("deliveries", "dlv-1", "pod_photo", new Blob([new Uint8Array(2500).fill(1)]), { mediaType: "image/jpeg" });
    const b = await client.attachments.attach("deliveries", "dlv-2", "pod_photo", new Blob([new Uint8Array(500).fill(2)]), { mediaType: "image/jpeg" });
    const started = Date.now();
    await client.start();
    // The first file's second chunk stalls; the second file is not held behind it.
    await until(async () => (await client.attachments.status(b.id))?.state === "uploaded", 5_000);
    expect(firstId).toBe(a.id);
    expect(Date.now() - started).toBeGreaterThanOrEqual(300);
    await until(async () => (await client.attachments.status(a.id))?.state === "uploaded", 5_000);
    expect(Array.from(server.uploads.get(a.id)!.bytes)).toEqual(Array(2500).fill(1));
    // Resumed from the server's offset: the first chunk was not sent again.
    expect(server.patched.get(a.id)).toBe(2500);
    expect(server.requests.filter((r) => r === `HEAD /v1/attachments/uploads/${a.id}`).length).toBeGreaterThanOrEqual(1);
    await client.close();
  });
});

/** A request whose answer comes after `answerMs`, reporting progress every `progressMs` meanwhile. */
function slowStack(answerMs: number, progressMs: number): HttpStack & { aborted: number } {
  const stack = {
    aborted: 0,
    getName: () => "slow",
    createRequest(method: string, url: string): HttpRequest {
      let onProgress: (n: number) => void = () => undefined;
      return {
        getMethod: () => method,
        getURL: () => url,
        setHeader: () => undefined,
        getHeader: () => undefined,
        setProgressHandler: (h) => {
          onProgress = h;
        },
        send: () =>
          new Promise<HttpResponse>((resolve) => {
            let sent = 0;
            const tick = setInterval(() => onProgress((sent += 100)), progressMs);
            setTimeout(() => {
              clearInterval(tick);
              resolve({ getStatus: () => 204, getHeader: () => undefined, getBody: () => "", getUnderlyingObject: () => null });
            }, answerMs);
          }),
        abort: () => {
          stack.aborted++;
          return Promise.resolve();
        },
        getUnderlyingObject: () => null,
      };
    },
  };
  return stack;
}

describe("IdleTimeoutHttpStack", () => {
  it("lets a slow request through while it makes progress, and tells the caller's progress handler", async () => {
    const inner = slowStack(400, 50);
    const req = new IdleTimeoutHttpStack(inner, 150).createRequest("PATCH", "http://x/u/1");
    const progress: number[] = [];
    req.setProgressHandler((n) => progress.push(n));
    expect((await req.send(new Blob(["x"]))).getStatus()).toBe(204);
    expect(progress.length).toBeGreaterThanOrEqual(3);
    expect(inner.aborted).toBe(0);
  });

  it("aborts and rejects a request with no progress for the idle time", async () => {
    const inner = slowStack(2_000, 10_000);
    const req = new IdleTimeoutHttpStack(inner, 100).createRequest("PATCH", "http://x/u/1");
    const t0 = Date.now();
    await expect(req.send(new Blob(["x"]))).rejects.toBeInstanceOf(UploadStalled);
    expect(Date.now() - t0).toBeLessThan(1_000);
    expect(inner.aborted).toBe(1);
  });
});
