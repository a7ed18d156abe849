"""4. Fan-out and 7. idle: measured by ``python -m benchmarks.bench_fanout``, not yet by this runner.

The live channel (``/v1/sync/ws``) exists and ``benchmarks/bench_fanout.py``
measures both (p50/p99 from push accepted to receipt, RSS per idle connection),
writing its own JSON result. They are registered here so ``run fanout`` and
``run idle`` point there and exit 0, recording no numbers of their own. Still to do:

* **fanout**: one writer pushes over HTTP, M WebSocket subscribers (default
  1,000) receive the change; report p50/p99 from push to receipt (target: p99
  ≤ 50 ms at 1,000 subscribers), with the Yjs WebSocket server
  (``@y/websocket-server@0.1.1`` + ``yjs@13``, started with
  ``node node_modules/@y/websocket-server/src/server.js`` and ``HOST``/``PORT``)
  as the peer, installed like PouchDB into ``benchmarks/.peers/``.
* **idle**: N idle WebSocket connections after ``hello``; report server RSS per
  connection (RSS with N open minus RSS before, divided by N).
"""

from __future__ import annotations

from benchmarks.results import Result
from benchmarks.runner import Context, Skip

NEEDS = (
    "not wired into this runner yet: run `python -m benchmarks.bench_fanout` "
    "(fan-out latency and RSS per idle connection); no numbers are recorded here"
)


def run(ctx: Context, result: Result) -> None:
    raise Skip(NEEDS)
