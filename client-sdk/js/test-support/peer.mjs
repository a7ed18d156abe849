// A browser SDK peer under node, driven line by line over stdin/stdout (JSON), for the
// cross-SDK tests in tests/sdk/. IndexedDB is fake-indexeddb (in memory, this process);
// the WebSocket is the `ws` package (node 20 has no global WebSocket).
//
//   {"id": 1, "cmd": "open", "args": {"url": ..., "token": ..., "replicaId": ..., "schema": {...}}}
//   {"id": 2, "cmd": "call", "args": {"collection": "deliveries", "method": "set", "params": ["dlv-1", {...}]}}
//   {"id": 3, "cmd": "sync"}
// Each line gets one answer: {"id": 1, "ok": true, "result": ...} or {"id": 1, "ok": false, "error": "..."}.
import "fake-indexeddb/auto";
import { createInterface } from "node:readline";
import WebSocket from "ws";

import { SyncClient } from "../dist/index.js";

let client = null;
const events = [];

async function handle(cmd, args) {
  switch (cmd) {
    case "open":
      client = await SyncClient.open({ ...args, WebSocket });
      client.subscribe((e) => events.push(e));
      return { replicaId: client.replicaId };
    case "call": {
      const handle = client.collection(args.collection);
      return await handle[args.method](...args.params);
    }
    case "sync":
      return await client.sync();
    case "start":
      await client.start();
      return client.status();
    case "status":
      return client.status();
    case "stored":
      // The views as last pulled, without the outbox: the bytes the server sent.
      return await client.store.views(args.collection);
    case "views":
      return Object.fromEntries(await client.views(args.collection));
    case "events":
      return events.splice(0);
    case "setToken":
      await client.setToken(args.token);
      return null;
    case "close":
      await client.close();
      return null;
    default:
      throw new Error(`unknown command ${cmd}`);
  }
}

const lines = createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on("line", (line) => {
  const { id, cmd, args } = JSON.parse(line);
  // One command at a time, in order, as the Python side sends them.
  queue = queue.then(async () => {
    try {
      const result = await handle(cmd, args ?? {});
      process.stdout.write(JSON.stringify({ id, ok: true, result: result ?? null }) + "\n");
    } catch (exc) {
      process.stdout.write(JSON.stringify({ id, ok: false, error: `${exc?.name}: ${exc?.message}` }) + "\n");
    }
  });
});
lines.on("close", () => {
  void queue.then(() => process.exit(0));
});
