"""Browser: N writes queued offline in real Chromium, then synced: IndexedDB commit time and sync time.

    python -m benchmarks.bench_browser                  # 10,000 writes, one repetition
    python -m benchmarks.bench_browser --writes 1000 --reps 3

The driver PWA (``examples/driver-pwa``, built with npm from the browser SDK)
runs in Debian's chromium (headless, Playwright) against our server (uvicorn +
uvloop, SQLite in a temporary directory) on 127.0.0.1, as in ``scripts/pwa``.
Each repetition opens a fresh phone profile, waits for the live channel, goes
offline and makes N writes one after another through the SDK
(``inc(delivery, "cod_cents", 1)`` round-robin over the driver's three
deliveries; each awaited, so each is its own committed IndexedDB transaction,
with the app's reactive list re-rendering as it would for a driver). Then the
network comes back and the clock runs until the outbox is empty (polled every
20 ms) — the SDK pushes in batches over the WebSocket — and the server's
counters are checked: they sum to N, so every write arrived exactly once.
The same N writes are also timed through a bare client of the same SDK build
on a database of its own (no sync loop, no UI): the SDK's share of the cost.

Writes ``benchmarks/results/browser-sqlite-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from benchmarks.results import RESULTS_DIR, machine
from syncserver.auth import TokenVerifier
from syncserver.testing import ROOT, cli, free_port, running_server, server_env, stop

APP = ROOT / "examples" / "driver-pwa"
SDK = ROOT / "client-sdk" / "js"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
ENTITIES = ("dlv-1001", "dlv-1002", "dlv-1003")

WRITE = """async (n) => {
  const d = window.driverApp.client.collection('deliveries');
  const entities = ENTITIES;
  const latencies = new Float64Array(n);
  const started = performance.now();
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await d.inc(entities[i % entities.length], 'cod_cents', 1);
    latencies[i] = performance.now() - t;
  }
  const total = performance.now() - started;
  latencies.sort();
  return {total_ms: total, p50_ms: latencies[Math.floor(n / 2)], p99_ms: latencies[Math.floor(n * 0.99)]};
}""".replace("ENTITIES", json.dumps(list(ENTITIES)))


# The same writes through a second client of the same SDK build on its own database: no sync loop, no UI.
WRITE_SDK_ONLY = WRITE.replace(
    "const d = window.driverApp.client.collection('deliveries');",
    "const SyncClient = window.driverApp.client.constructor;"
    " const bare = await SyncClient.open({url: 'http://127.0.0.1:9', token: 'unused', dbName: 'bench-' + Date.now()});"
    " const d = bare.collection('deliveries');",
)


def build() -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("the browser benchmark needs npm (Node.js 20+) to build the app")
    for folder in (SDK, APP):
        if not (folder / "node_modules").is_dir():
            subprocess.run([npm, "ci", "--silent"], cwd=folder, check=True)
        subprocess.run([npm, "run", "--silent", "build"], cwd=folder, check=True)


@contextmanager
def site(tmp: Path) -> Iterator[tuple[str, str, TokenVerifier]]:
    """Our server and the PWA's dev server; yields (api, app, verifier)."""
    app_port = free_port()
    app = f"http://127.0.0.1:{app_port}"
    env = server_env(tmp, f"sqlite+aiosqlite:///{tmp / 'sync.db'}", SYNC_LOG_LEVEL="WARNING")
    env["SYNC_CORS_ALLOW_ORIGINS"] = app
    cli(env, "tenant", "create", "demo")
    with running_server(env, free_port(), tmp / "server.log") as api:
        pwa_env = dict(env, PWA_SYNC_URL=api, PWA_TENANT="demo", PWA_PORT=str(app_port))
        devserver = [sys.executable, str(APP / "devserver.py")]
        subprocess.run([*devserver, "seed"], env=pwa_env, check=True, capture_output=True)
        with (tmp / "pwa.log").open("wb") as log:
            proc = subprocess.Popen([*devserver, "serve"], env=pwa_env, stdout=log, stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        if httpx.get(f"{app}/config.json", timeout=1).status_code == 200:
                            break
                    except httpx.HTTPError:
                        if time.monotonic() > deadline or proc.poll() is not None:
                            raise
                    time.sleep(0.1)
                yield api, app, TokenVerifier(env["SYNC_JWT_SECRET"], "syncserver", "sync")
            finally:
                stop(proc)


def cod_total(api: str, verifier: TokenVerifier) -> int:
    headers = {"Authorization": f"Bearer {verifier.issue('demo', 'bench', 'dispatcher')}"}
    total = 0
    for entity in ENTITIES:
        r = httpx.get(f"{api}/v1/entities/deliveries/{entity}", headers=headers)
        r.raise_for_status()
        total += int(r.json()["fields"].get("cod_cents", {}).get("value", 0))
    return total


def repetition(browser: Any, api: str, app: str, verifier: TokenVerifier, writes: int) -> dict[str, float]:
    before = cod_total(api, verifier)
    context = browser.new_context(viewport={"width": 390, "height": 844})
    context.set_default_timeout(600_000)
    try:
        page = context.new_page()
        page.goto(f"{app}/?driver=driver-1")
        page.wait_for_selector("body[data-ready='1']")
        page.wait_for_selector("#sync[data-connection='live']")
        context.set_offline(True)
        commit: dict[str, float] = page.evaluate(WRITE, writes)
        bare: dict[str, float] = page.evaluate(WRITE_SDK_ONLY, writes)
        queued = page.evaluate("() => window.driverApp.client.pendingCount()")
        if queued != writes:
            raise AssertionError(f"{queued} writes in the outbox, expected {writes}")
        started = time.perf_counter()
        context.set_offline(False)
        page.wait_for_function("() => window.driverApp.client.status().outbox === 0", polling=20)
        sync_s = time.perf_counter() - started
    finally:
        context.close()
    arrived = cod_total(api, verifier) - before
    if arrived != writes:
        raise AssertionError(f"the server counted {arrived} increments, expected {writes}")
    return {
        "commit_s": commit["total_ms"] / 1000,
        "commit_per_s": writes / (commit["total_ms"] / 1000),
        "commit_p50_ms": commit["p50_ms"],
        "commit_p99_ms": commit["p99_ms"],
        "sdk_only_commit_s": bare["total_ms"] / 1000,
        "sdk_only_commit_p50_ms": bare["p50_ms"],
        "sdk_only_commit_p99_ms": bare["p99_ms"],
        "sync_s": sync_s,
        "sync_per_s": writes / sync_s,
    }


def run(writes: int, reps: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    build()
    figures: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp, site(Path(tmp)) as (api, app, verifier), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            for rep in range(reps):
                figures.append(repetition(browser, api, app, verifier, writes))
                print(f"rep {rep + 1}/{reps}: " + ", ".join(f"{k}={v:,.2f}" for k, v in figures[-1].items()))
        finally:
            browser.close()
    summary = {key: statistics.median(f[key] for f in figures) for key in figures[0]}
    return {
        "scenario": "browser",
        "backend": "sqlite",
        "params": {"writes": writes, "reps": reps, "browser": "chromium (headless)"},
        "repetitions": figures,
        "median": summary,
        "checks": {"server counted every write exactly once": True},
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Queued writes in the browser: IndexedDB commit and sync time.")
    parser.add_argument("--writes", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    result = run(args.writes, args.reps)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"browser-sqlite-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    m = result["median"]
    print(
        f"{args.writes:,} writes: committed to IndexedDB in {m['commit_s']:.2f} s ({m['commit_per_s']:,.0f}/s, "
        f"p50 {m['commit_p50_ms']:.2f} ms, p99 {m['commit_p99_ms']:.2f} ms); "
        f"synced in {m['sync_s']:.2f} s ({m['sync_per_s']:,.0f}/s); the SDK alone, no UI: "
        f"{m['sdk_only_commit_s']:.2f} s -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
