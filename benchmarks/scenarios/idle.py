"""7. Idle: N WebSocket connections that said hello and got ``synced``; server memory per connection.

The connections open in two halves on a fresh server process (warmed up by one
session). RSS added by the second half, divided by its size, is the cost of
one idle connection; fixed costs (buffers, the tenant's feed) fall in the
first half. ``with fixed costs`` divides the whole gain by N. RSS comes from
the server's own ``process_resident_memory_bytes`` on ``/metrics``.
"""

from __future__ import annotations

from benchmarks import bench_fanout
from benchmarks.results import Result
from benchmarks.runner import Context
from benchmarks.server import our_server

DEFAULTS = {"connections": 1000, "client_procs": 2, "reps": 3}
QUICK = {"connections": 100, "client_procs": 1, "reps": 1}


def run(ctx: Context, result: Result) -> None:
    n = int(ctx.params["connections"])
    params = {"changes": 0, "interval_ms": 0, "client_procs": ctx.params["client_procs"], "deflate": False}
    task = ctx.progress.add_task(f"idle: {n:,} connections", total=ctx.reps)
    for rep in range(ctx.reps):
        with our_server(ctx.backend, log_name=f"server-idle-{rep}.log") as server:
            tenant = server.tenant("idle")

            def issue(sub: str, tenant: str = tenant) -> str:
                return server.token(tenant, sub)

            bench_fanout.warm_up(server.base, issue)
            size = bench_fanout.measure(server.base, issue, n, params, lambda line: None)
        # The server's own gauge, read while they were open (the warm-up session had closed).
        result.check(f"connections the server held open (rep {rep + 1})", n, int(size["open_connections_at_idle"]))
        result.add("RSS per idle connection", size["rss_per_idle_connection_bytes"], "bytes")
        result.add(
            "RSS per idle connection, with fixed costs", size["rss_per_idle_connection_bytes_with_fixed_costs"], "bytes"
        )
        ctx.progress.advance(task)
