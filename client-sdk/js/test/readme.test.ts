/** The README's snippets run: the quickstart against a scripted server, the service-worker lines with a fake scope. */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";

import * as sdk from "../src/index.js";
import * as sw from "../src/sw.js";
import { FakeServer, freshDb } from "./fake-server.js";
import { FakeTus } from "./fake-tus.js";

const README = readFileSync(join(import.meta.dirname, "..", "README.md"), "utf8");
const blocks = [...README.matchAll(/```(ts|js)\n([\s\S]*?)```/g)].map((m) => m[2]!);
const AsyncFunction = async function () {}.constructor as new (...args: string[]) => (...a: unknown[]) => Promise<unknown>;

/** A snippet as a function of the names it imports (the import lines become parameters). */
function compile(block: string, names: string[]): (...a: unknown[]) => Promise<unknown> {
  return new AsyncFunction(...names, block.replace(/^import .*$/gm, ""));
}

afterEach(() => {
  vi.unstubAllGlobals();
});

describe("README snippets", () => {
  it("the quickstart runs: writes, reads, events, sync", async () => {
    const server = new FakeServer();
    vi.stubGlobal("fetch", server.fetch);
    vi.spyOn(console, "log").mockImplementation(() => undefined);
    const quickstart = blocks.find((b) => b.includes("SyncClient.open"));
    expect(quickstart).toBeDefined();
    const rendered: unknown[] = [];
    const run = compile(`${quickstart!}\nreturn deliveries;`, ["SyncClient", "fetchTokenSomehow", "render", "freshToken"]);
    await run(sdk.SyncClient, () => "token-1", (rows: unknown) => rendered.push(rows), "token-2");
    expect(server.log.map((c) => c.ops[0]?.op)).toEqual(["set", "inc", "add", "remove", "append", "text", "delete"]);
    expect(rendered.length).toBeGreaterThan(0);
  });

  it("the attachments lines run: attach, progress events, status, upload, fetch", async () => {
    const server = new FakeTus();
    const client = await sdk.SyncClient.open({ url: "http://sync.test", token: "t0", dbName: freshDb(), fetch: server.fetch });
    const block = blocks.find((b) => b.includes("attachments.attach"));
    expect(block).toBeDefined();
    const progress: unknown[] = [];
    const run = compile(`${block!}\nreturn [photo, blob];`, ["client", "jpegBlob", "showProgress", "showRefused"]);
    const jpeg = new Blob([new Uint8Array([0xff, 0xd8, 0xff, 0xd9])]);
    const [photo, blob] = (await run(client, jpeg, (...a: unknown[]) => progress.push(a), () => undefined)) as [sdk.AttachmentRef, Blob];
    expect(server.uploads.get(photo.id)?.offset).toBe(4);
    expect(progress.at(-1)).toEqual([photo.id, "uploaded", 4, 4]);
    expect(new Uint8Array(await blob.arrayBuffer())).toEqual(new Uint8Array([0xff, 0xd8, 0xff, 0xd9]));
    await client.close();
  });

  it("the service-worker lines register the sync handler", () => {
    const block = blocks.find((b) => b.includes("registerOutboxSync"));
    const listeners: string[] = [];
    const self = { addEventListener: (type: string) => listeners.push(type) };
    void compile(block!, ["registerOutboxSync", "self"])(sw.registerOutboxSync, self);
    expect(listeners).toEqual(["sync"]);
  });
});
