"""4. Fan-out: one writer, M WebSocket subscribers; latency from push to every subscriber.

Per M (fresh server process each, so a smaller run's memory does not hide a
larger one's): M subscribers (one user each) connect over ``/v1/sync/ws``, say
hello and wait for ``synced``; one writer then pushes ``changes`` changes over
HTTP, ``interval_ms`` apart, and every subscriber records each arrival (see
``benchmarks/bench_fanout.py``, which does the measuring). Latency is arrival
minus "push accepted" (the writer got its 200). Checked: every change reached
every subscriber exactly once.

**Peer: the Yjs WebSocket server** (``@y/websocket-server`` 0.1.1 with
``yjs`` 13): the same M subscribers on one room, spread over the same number
of client processes (Node), and a writer doc in a process of its own, each
change a Y.Map key set; one clock (CLOCK_MONOTONIC) across the processes. Runs in alternating order
with ours (A B, then B A). Yjs relays updates between peers with no storage,
no auth and no scopes, so it is the floor for "a change reaches a subscriber",
not a like-for-like sync server.
"""

from __future__ import annotations

from benchmarks import bench_fanout
from benchmarks.peers import yjs
from benchmarks.results import Result
from benchmarks.runner import Context, order
from benchmarks.server import our_server

DEFAULTS = {"subscribers": [10, 100, 1000], "changes": 100, "interval_ms": 200, "client_procs": 2, "reps": 1}
QUICK = {"subscribers": [10], "changes": 10, "interval_ms": 50, "client_procs": 1, "reps": 1}


def run(ctx: Context, result: Result) -> None:
    sizes = [int(m) for m in ctx.params["subscribers"]]
    peer = ctx.yjs_ready(result)
    task = ctx.progress.add_task("fan-out", total=len(sizes) * ctx.reps * (2 if peer else 1))
    for m in sizes:
        for rep in range(ctx.reps):
            for side in order(rep, ["ours", "yjs"] if peer else ["ours"]):
                if side == "ours":
                    _ours(ctx, result, m)
                else:
                    _yjs(ctx, result, m)
                ctx.progress.advance(task)
        if peer:
            ours = result.figures.get(f"ours p99 M={m}")
            theirs = result.figures.get(f"Yjs p99 M={m}")
            if ours and theirs:
                result.ratio(f"p99 ours ÷ Yjs, M={m}", ours[-1], theirs[-1])


def _ours(ctx: Context, result: Result, m: int) -> None:
    params = {**ctx.params, "deflate": False}
    with our_server(ctx.backend, log_name=f"server-fanout-{m}.log") as server:
        tenant = server.tenant("fanout")

        def issue(sub: str) -> str:
            return server.token(tenant, sub)

        bench_fanout.warm_up(server.base, issue)
        size = bench_fanout.measure(server.base, issue, m, params, lambda line: ctx.console.print(line))
    latency = size["latency_ms_from_accepted"]
    result.add(f"ours p50 M={m}", latency["p50"], "ms")
    result.add(f"ours p99 M={m}", latency["p99"], "ms")
    result.add(f"ours server CPU per change M={m}", size["server_cpu_ms_per_change"], "ms")
    result.check(f"ours: deliveries, M={m}", size["expected_deliveries"], size["deliveries"])
    result.check(f"ours: changes delivered twice, M={m}", 0, size["duplicates"])


def _yjs(ctx: Context, result: Result, m: int) -> None:
    p = ctx.params
    with yjs.yjs_server(ctx.tmp) as url:
        found = yjs.fanout(
            url, m, int(p["changes"]), float(p["interval_ms"]), timeout_s=300, client_procs=int(p["client_procs"])
        )
    result.add(f"Yjs p50 M={m}", float(found["p50_ms"]), "ms")
    result.add(f"Yjs p99 M={m}", float(found["p99_ms"]), "ms")
    result.check(f"Yjs: updates missing, M={m}", 0, found["missing"])
