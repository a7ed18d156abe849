"""Live drivers: what one change costs the server when many drivers of a tenant are connected.

    python -m benchmarks.bench_live_drivers [--drivers 10,200,1000] [--changes 40] [--interval-ms 50]

For each M: a fresh server on SQLite; a dispatcher assigns one delivery to driver 0;
M drivers (each a token scoped to its own channel, ``driver:driver-<i>``) connect over
``/v1/sync/ws``, say hello and wait for ``synced``. The dispatcher then changes that
delivery ``--changes`` times over HTTP, ``--interval-ms`` apart. Printed per M: the
server's CPU time per change (``process_cpu_seconds_total`` from ``/metrics``, so
the push itself is in it), how many ``changes`` frames driver 0 got (one per change when
the server keeps up; fewer when it fell behind and coalesced them) and the latency from
the push's answer to driver 0's frame (p50, p99), and how many frames the other drivers
got (none: the delivery is not in their channels).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time
from contextlib import ExitStack
from pathlib import Path
from tempfile import TemporaryDirectory

import httpx
from websockets.asyncio.client import ClientConnection, connect

from benchmarks.backends import open_backend
from benchmarks.server import OurServer, our_server
from benchmarks.wire import SyncClient, change, now_ms, push_bodies

CONNECT_AT_ONCE = 50
ENTITY = "route-0"


def _cpu_seconds(base: str) -> float:
    found = re.search(r"^process_cpu_seconds_total (\S+)$", httpx.get(base + "/metrics").text, re.MULTILINE)
    if found is None:
        raise RuntimeError("the server's /metrics has no process_cpu_seconds_total")
    return float(found.group(1))


async def _driver(url: str, token: str) -> ClientConnection:
    ws = await connect(
        url, additional_headers={"Authorization": f"Bearer {token}"}, ping_interval=None, max_size=None, open_timeout=60
    )
    await ws.send('{"type":"hello","versions":[1]}')
    while b'"synced"' not in (await ws.recv(decode=False))[:40]:
        pass
    return ws


async def _measure(server: OurServer, tenant: str, m: int, changes: int, interval_s: float) -> dict[str, float]:
    url = server.base.replace("http://", "ws://") + "/v1/sync/ws"
    tokens = [server.token(tenant, f"driver-{i}", "driver", (f"driver:driver-{i}",)) for i in range(m)]
    sockets: list[ClientConnection] = []
    for start in range(0, m, CONNECT_AT_ONCE):
        sockets += await asyncio.gather(*(_driver(url, t) for t in tokens[start : start + CONNECT_AT_ONCE]))
    arrivals: list[list[float]] = [[] for _ in sockets]

    async def listen(i: int, ws: ClientConnection) -> None:
        while True:
            raw = await ws.recv(decode=False)
            if b'"changes"' in raw[:40]:
                arrivals[i].append(time.monotonic())

    listeners = [asyncio.create_task(listen(i, ws)) for i, ws in enumerate(sockets)]
    await asyncio.sleep(0.5)
    cpu_before = _cpu_seconds(server.base)
    acked: list[float] = []
    with SyncClient(server.base, server.headers(tenant, "dispatcher", "dispatcher")) as dispatcher:
        for k in range(changes):
            op = {"op": "set", "field": "status", "value": f"stop-{k}"}
            body = push_bodies("dispatch-web", [change(k + 2, ENTITY, [op], (now_ms(), k), {"dispatch-web": k + 1})], 1)
            await asyncio.to_thread(dispatcher.push_all, body)
            acked.append(time.monotonic())
            await asyncio.sleep(interval_s)
    await asyncio.sleep(2.0)
    cpu_after = _cpu_seconds(server.base)
    for task in listeners:
        task.cancel()
    await asyncio.gather(*listeners, return_exceptions=True)
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    # Each frame of driver 0 answers the latest push acknowledged before it.
    latencies = [(t - max(a for a in acked if a <= t)) * 1000 for t in arrivals[0] if any(a <= t for a in acked)]
    latencies.sort()
    return {
        "cpu_ms_per_change": (cpu_after - cpu_before) / changes * 1000,
        "frames_driver_0": len(arrivals[0]),
        "p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else float("nan"),
        "frames_others": sum(len(a) for a in arrivals[1:]),
    }


def run(m: int, changes: int, interval_s: float) -> dict[str, float]:
    with ExitStack() as stack:
        backend = stack.enter_context(open_backend("sqlite", Path(stack.enter_context(TemporaryDirectory())), "live"))
        server = stack.enter_context(our_server(backend))
        tenant = server.tenant("live-drivers")
        with SyncClient(server.base, server.headers(tenant, "dispatcher", "dispatcher")) as dispatcher:
            assign = [{"op": "set", "field": "driver_id", "value": "driver-0"}]
            dispatcher.push_all(push_bodies("dispatch-web", [change(1, ENTITY, assign, (now_ms(), 0))], 1))
        return asyncio.run(_measure(server, tenant, m, changes, interval_s))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drivers", default="10,200,1000", help="comma-separated numbers of connected drivers")
    parser.add_argument("--changes", type=int, default=40)
    parser.add_argument("--interval-ms", type=float, default=50)
    args = parser.parse_args(argv)
    for m in (int(x) for x in args.drivers.split(",")):
        r = run(m, args.changes, args.interval_ms / 1000)
        print(
            f"M={m}: server CPU {r['cpu_ms_per_change']:.1f} ms per change; driver 0 got "
            f"{r['frames_driver_0']:.0f} frames for {args.changes} changes (p50 {r['p50_ms']:.1f} ms, "
            f"p99 {r['p99_ms']:.1f} ms after the push's answer); other drivers got {r['frames_others']:.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
