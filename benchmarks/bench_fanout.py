"""Fan-out: one writer, M WebSocket subscribers; latency to every subscriber and RSS per idle connection.

    python -m benchmarks.bench_fanout                       # M = 10, 100, 1000
    python -m benchmarks.bench_fanout --quick               # M = 10, 50; fewer changes
    python -m benchmarks.bench_fanout --subscribers 1000 --changes 100 --deflate

One server process per M (uvicorn + uvloop, SQLite in a temporary directory,
in-process fan-out) on a free loopback port, warmed up by one session. M
subscribers (dispatcher tokens, one user each) connect over ``/v1/sync/ws`` in
two halves, say hello and wait for ``synced``. The RSS the second half added,
divided by its size, is the cost of an idle connection (fixed costs fall in the
first half; ``..._with_fixed_costs`` divides the whole gain by M). RSS comes
from ``process_resident_memory_bytes`` on ``/metrics``, server CPU from
``process_cpu_seconds_total``. Then one writer pushes one change at a time over
HTTP, ``--interval-ms`` apart, and every subscriber records when each change
arrives. Latency is ``arrival - push accepted`` (the writer got its 200; an
arrival before that counts as 0) and ``arrival - push sent`` (an upper bound:
it includes the push itself). Subscribers run in ``--client-procs`` processes
of their own; all clocks are CLOCK_MONOTONIC on one machine.

``measure(base, issue, m, params, log)`` is what the benchmark runner's
``fanout`` and ``idle`` scenarios call (``python -m benchmarks run fanout``,
on either backend, with the Yjs peer); ``run(params)`` is this standalone
command on SQLite, writing ``benchmarks/results/fanout-sqlite-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import httpx

from syncserver.auth.tokens import TokenVerifier
from syncserver.testing import cli, free_port, running_server, server_env

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULTS: dict[str, Any] = {
    "subscribers": [10, 100, 1000],
    "changes": 100,
    "interval_ms": 200,
    "client_procs": 2,
    "deflate": False,
}
QUICK: dict[str, Any] = {"subscribers": [10, 50], "changes": 20, "interval_ms": 50, "client_procs": 1}
CONNECT_CONCURRENCY = 50
Issue = Callable[[str], str]
"""``issue(sub)``: a dispatcher token for user ``sub`` of the benchmark's tenant."""
SETTLE_S = 1.0


# --- subscribers (run in child processes) --------------------------------------------------------


def _subscriber_process(url: str, tokens: list[str], deflate: bool, pipe: Pipe) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    asyncio.run(_subscribe(url, tokens, deflate, pipe))


async def _subscribe(url: str, tokens: list[str], deflate: bool, pipe: Pipe) -> None:
    from websockets.asyncio.client import ClientConnection, connect

    arrivals: list[list[tuple[float, bytes]]] = [[] for _ in tokens]
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def open_one(i: int) -> ClientConnection:
        async with gate:
            ws = await connect(
                url,
                additional_headers={"Authorization": f"Bearer {tokens[i]}"},
                compression="deflate" if deflate else None,
                ping_interval=None,
                max_size=None,
                open_timeout=60,
            )
            await ws.send('{"type":"hello","versions":[1]}')
            while b'"synced"' not in (await ws.recv(decode=False))[:40]:
                pass
            return ws

    async def listen(i: int, ws: ClientConnection) -> None:
        mine = arrivals[i]
        while True:
            raw = await ws.recv(decode=False)
            mine.append((time.monotonic(), raw))

    # Two halves, so the parent can measure memory per connection without fixed costs.
    half = len(tokens) // 2
    sockets = list(await asyncio.gather(*(open_one(i) for i in range(half))))
    pipe.send(("half", half))
    await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # "go"
    sockets += await asyncio.gather(*(open_one(i) for i in range(half, len(tokens))))
    listeners = [asyncio.create_task(listen(i, ws)) for i, ws in enumerate(sockets)]
    pipe.send("ready")
    await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # "stop"
    for task in listeners:
        task.cancel()
    await asyncio.gather(*listeners, return_exceptions=True)
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    pipe.send([_entities(per_socket) for per_socket in arrivals])


def _entities(arrived: list[tuple[float, bytes]]) -> dict[str, list[float]]:
    """entity id -> its arrivals, from the raw frames (parsed after the run, off the clock).

    Each change makes a new entity, so an entity that arrives twice was delivered twice.
    """
    seen: dict[str, list[float]] = {}
    for at, raw in arrived:
        message = json.loads(raw)
        if message.get("type") == "changes":
            for entity in message["changes"]:
                seen.setdefault(entity["entity"], []).append(at)
    return seen


# --- the server and the writer ----------------------------------------------------------------------


def _process_metric(client: httpx.Client, base: str, name: str) -> float:
    text = client.get(base + "/metrics").text
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"the server's /metrics has no {name}")
    return float(found.group(1))


def _rss(client: httpx.Client, base: str) -> float:
    return _process_metric(client, base, "process_resident_memory_bytes")


def _cpu(client: httpx.Client, base: str) -> float:
    return _process_metric(client, base, "process_cpu_seconds_total")


def warm_up(base: str, issue: Issue) -> None:
    """One session from hello to synced, so one-time costs (imports, the tenant's feed) are not counted per idle
    connection."""
    from websockets.sync.client import connect

    token = issue("warm-up")
    url = base.replace("http://", "ws://") + "/v1/sync/ws"
    with connect(url, additional_headers={"Authorization": f"Bearer {token}"}, compression=None) as ws:
        ws.send('{"type":"hello","versions":[1]}')
        while b'"synced"' not in ws.recv(timeout=30, decode=False)[:40]:
            pass
    time.sleep(0.5)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(base: str, issue: Issue, m: int, params: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """M subscribers on the running server at ``base``, then ``params["changes"]`` pushes (0: idle only).

    ``issue(sub)`` returns a dispatcher token of one tenant for user ``sub``.
    """
    tokens = [issue(f"sub-{m}-{i}") for i in range(m)]
    procs = max(1, min(int(params["client_procs"]), m))
    url = base.replace("http://", "ws://") + "/v1/sync/ws"
    writer_token = issue("writer")
    ctx = mp.get_context("spawn")
    with httpx.Client(headers={"Authorization": f"Bearer {writer_token}"}, timeout=60) as http:
        rss_before = _rss(http, base)
        pipes, children = [], []
        for k in range(procs):
            ours, theirs = ctx.Pipe()
            share = tokens[k::procs]
            child = ctx.Process(target=_subscriber_process, args=(url, share, bool(params["deflate"]), theirs))
            child.start()
            pipes.append(ours)
            children.append(child)
        try:
            halves = 0
            for pipe in pipes:
                if not pipe.poll(300):
                    raise RuntimeError("subscribers did not connect within 300 s")
                halves += pipe.recv()[1]
            time.sleep(SETTLE_S)
            rss_half = _rss(http, base)
            for pipe in pipes:
                pipe.send("go")
            for pipe in pipes:
                if not pipe.poll(300) or pipe.recv() != "ready":
                    raise RuntimeError("subscribers did not connect within 300 s")
            time.sleep(SETTLE_S)
            rss_idle = _rss(http, base)
            open_at_idle = _process_metric(http, base, "sync_websocket_connections")
            log(f"M={m}: {m} idle subscribers, server RSS +{(rss_idle - rss_before) / 2**20:.1f} MiB")

            sent: dict[str, tuple[float, float]] = {}
            cpu_before = _cpu(http, base)
            replica = f"writer-{m}-{uuid.uuid4().hex[:6]}"
            for n in range(1, int(params["changes"]) + 1):
                entity = f"{replica}-{n}"
                body = {
                    "replica": replica,
                    "changes": [
                        {
                            "id": str(uuid.uuid4()),
                            "n": n,
                            "collection": "deliveries",
                            "entity": entity,
                            "hlc": [int(time.time() * 1000), 0],
                            "context": {},
                            "ops": [{"op": "set", "field": "status", "value": "out_for_delivery"}],
                        }
                    ],
                }
                began = time.monotonic()
                r = http.post(base + "/v1/sync/push", json=body)
                accepted = time.monotonic()
                if r.status_code != 200 or r.json()["results"][0]["status"] != "applied":
                    raise RuntimeError(f"push failed: {r.status_code} {r.text}")
                sent[entity] = (began, accepted)
                time.sleep(max(0.0, params["interval_ms"] / 1000 - (accepted - began)))
            if sent:
                time.sleep(2.0)  # stragglers
            server_cpu_s = _cpu(http, base) - cpu_before
        finally:
            for pipe in pipes:
                with contextlib.suppress(OSError):
                    pipe.send("stop")
            received: list[dict[str, list[float]]] = []
            for pipe in pipes:
                if pipe.poll(120):
                    received += pipe.recv()
            for child in children:
                child.join(30)
                if child.is_alive():
                    child.kill()
    from_sent, from_accepted, missing, duplicates = [], [], 0, 0
    for per_subscriber in received:
        for entity, (began, accepted) in sent.items():
            arrivals = per_subscriber.get(entity)
            if not arrivals:
                missing += 1
                continue
            duplicates += len(arrivals) - 1
            at = arrivals[0]
            from_sent.append((at - began) * 1000)
            from_accepted.append(max(0.0, at - accepted) * 1000)
    expected = len(sent) * m
    return {
        "subscribers": m,
        "changes": len(sent),
        "deliveries": len(from_sent),
        "missing": missing,
        "duplicates": duplicates,
        "complete": missing == 0 and duplicates == 0 and len(received) == m,
        "latency_ms_from_sent": {
            "p50": _percentile(from_sent, 0.50),
            "p99": _percentile(from_sent, 0.99),
            "max": max(from_sent, default=float("nan")),
            "mean": statistics.fmean(from_sent) if from_sent else float("nan"),
        },
        "latency_ms_from_accepted": {
            "p50": _percentile(from_accepted, 0.50),
            "p99": _percentile(from_accepted, 0.99),
            "max": max(from_accepted, default=float("nan")),
        },
        "server_rss_bytes": {"before": rss_before, "half": rss_half, "idle": rss_idle},
        "server_cpu_ms_per_change": server_cpu_s * 1000 / max(1, len(sent)),
        "rss_per_idle_connection_bytes": (rss_idle - rss_half) / max(1, m - halves),
        "rss_per_idle_connection_bytes_with_fixed_costs": (rss_idle - rss_before) / m,
        "expected_deliveries": expected,
        "open_connections_at_idle": open_at_idle,
    }


def run(params: dict[str, Any] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark; ``params`` override ``DEFAULTS`` (``quick=True`` starts from ``QUICK``)."""
    given = dict(params or {})
    merged = {**DEFAULTS, **(QUICK if given.pop("quick", False) else {}), **given}
    results_dir = Path(merged.pop("results_dir", RESULTS_DIR))
    started = time.strftime("%Y%m%dT%H%M%S")
    sizes: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp_name:
        tmp = Path(tmp_name)
        env = server_env(
            tmp,
            f"sqlite+aiosqlite:///{tmp / 'sync.db'}",
            SYNC_RATE_LIMIT="off",
            SYNC_WS_MAX_CONNECTIONS="100000",
            SYNC_LOG_LEVEL="WARNING",
        )
        tenant = cli(env, "tenant", "create", f"bench-{uuid.uuid4().hex[:8]}")
        verifier = TokenVerifier(env["SYNC_JWT_SECRET"], "syncserver", "sync")

        def issue(sub: str) -> str:
            return verifier.issue(tenant, sub, "dispatcher")

        load_before = os.getloadavg()
        for m in merged["subscribers"]:
            # A fresh process per M: memory freed by a smaller run would hide part of a larger one's cost.
            with running_server(env, free_port(), tmp / f"server-{m}.log") as base:
                warm_up(base, issue)
                sizes.append(measure(base, issue, int(m), merged, log))
                log(_summary(sizes[-1]))
        load_after = os.getloadavg()
    doc = {
        "scenario": "fanout",
        "backend": "sqlite",
        "started": started,
        "params": merged,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_start": load_before,
            "loadavg_end": load_after,
        },
        "targets": {"p99_ms_at_1000": 50, "rss_per_idle_connection_bytes": 32 * 1024},
        "results": sizes,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"fanout-sqlite-{started}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    doc["path"] = str(path)
    log(f"wrote {path}")
    return doc


def _summary(size: dict[str, Any]) -> str:
    acc, sent = size["latency_ms_from_accepted"], size["latency_ms_from_sent"]
    return (
        f"M={size['subscribers']:>5}: p50 {acc['p50']:.1f} ms, p99 {acc['p99']:.1f} ms from push accepted "
        f"(from push sent: p50 {sent['p50']:.1f}, p99 {sent['p99']:.1f}); "
        f"{size['deliveries']}/{size['expected_deliveries']} delivered; "
        f"{size['rss_per_idle_connection_bytes'] / 1024:.1f} KiB RSS per idle connection; "
        f"server CPU {size['server_cpu_ms_per_change']:.1f} ms per change"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes for a smoke run")
    parser.add_argument("--subscribers", type=int, nargs="+", help="values of M (default 10 100 1000)")
    parser.add_argument("--changes", type=int, help="changes pushed per M")
    parser.add_argument("--interval-ms", type=float, help="pause between pushes")
    parser.add_argument("--client-procs", type=int, help="processes the subscribers are spread over")
    parser.add_argument("--deflate", action="store_true", help="negotiate permessage-deflate, as browsers do")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    params: dict[str, Any] = {"quick": args.quick, "results_dir": args.results_dir, "deflate": args.deflate}
    for key in ("subscribers", "changes", "interval_ms", "client_procs"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    doc = run(params)
    return 0 if all(size["complete"] for size in doc["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
