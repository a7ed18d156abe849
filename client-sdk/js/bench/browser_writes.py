"""Benchmark: queued writes of the browser SDK in real Chromium (issue 10's speed item).

Measures, for N writes (default 10,000) made while offline as a driver's app
makes them (one awaited ``set`` after another, each its own IndexedDB
transaction with strict durability), the time to commit them all, then the time
for one ``sync()`` to push them to a real server (SQLite, on this machine) and
pull the result. Prints one JSON object.

    .venv/bin/python client-sdk/js/bench/browser_writes.py [--writes 10000]

Needs Debian's chromium, the playwright Python package and node (esbuild bundles
the SDK). The page is served by Playwright at the server's origin, so no CORS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

from playwright.sync_api import Route, sync_playwright

from syncserver.auth.tokens import TokenVerifier
from syncserver.testing import ROOT, cli, free_port, running_server, server_env

JS = ROOT / "client-sdk" / "js"
CHROMIUM = os.environ.get("SYNC_TEST_CHROMIUM", "/usr/bin/chromium")

PAGE = """<!doctype html><meta charset="utf-8"><title>SDK writes</title>
<script type="module">
import { SyncClient } from "/bench/sdk.js";
window.run = async (token, writes) => {
  const client = await SyncClient.open({ url: location.origin, token, transport: "http", dbName: "bench" });
  const d = client.collection("deliveries");
  const t0 = performance.now();
  for (let i = 0; i < writes; i++) {
    await d.set(`dlv-${i % 500}`, { status: "out_for_delivery", stop: i });
  }
  const committed = performance.now() - t0;
  const pending = await client.pendingCount();
  const t1 = performance.now();
  const stats = await client.sync();
  const synced = performance.now() - t1;
  await client.close();
  return { committed_ms: committed, sync_ms: synced, pending_before_sync: pending, stats };
};
</script>"""


def bundle(out: Path) -> None:
    subprocess.run(  # noqa: S603 - fixed argv: npx esbuild on our sources
        ["npx", "esbuild", "src/index.ts", "--bundle", "--format=esm", "--minify", f"--outfile={out}"],  # noqa: S607
        cwd=JS,
        check=True,
        capture_output=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        sdk = tmp / "sdk.js"
        bundle(sdk)
        env = server_env(tmp, f"sqlite+aiosqlite:///{tmp / 'server.db'}")
        cli(env, "tenant", "create", "acme")
        token = TokenVerifier(env["SYNC_JWT_SECRET"], "syncserver", "sync").issue(
            "acme", "dispatcher-1", "dispatcher", ()
        )
        with running_server(env, free_port(), tmp / "server.log") as base, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()

            def serve(route: Route) -> None:
                if route.request.url.endswith("/bench/sdk.js"):
                    route.fulfill(body=sdk.read_text(), content_type="text/javascript")
                else:
                    route.fulfill(body=PAGE, content_type="text/html")

            page.route(f"{base}/bench/**", serve)
            page.goto(f"{base}/bench/index.html")
            result = page.evaluate("([token, writes]) => window.run(token, writes)", [token, args.writes])
            browser.close()
    result["writes"] = args.writes
    result["writes_per_s"] = round(args.writes / (result["committed_ms"] / 1000))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
