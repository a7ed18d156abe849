"""What a driver's small pull costs: the request a reconnecting or polling driver makes most.

    python -m benchmarks.bench_driver_pull [--deliveries 1000] [--drivers 200] [--rounds 10] [--depot]

A dispatcher creates one delivery per driver (the storm scenario's seed), on
SQLite; each of ``--drivers`` drivers (a token scoped to its own channel, and with
``--depot`` to its depot's too: two channels) pulls to the end once. Then,
``--rounds`` times, every driver pulls again from its cursor, one after another on
one connection each (nothing new: the tenant row, the driver's channel page and its
evictions are read, and an empty page comes back). Printed: microseconds per pull,
each round's mean and the median of the rounds, as the client sees it
(``http.client``), so a figure includes the HTTP stack.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import ExitStack
from pathlib import Path
from tempfile import TemporaryDirectory

from benchmarks.backends import open_backend
from benchmarks.scenarios.storm import _seed
from benchmarks.server import our_server
from benchmarks.wire import SyncClient


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deliveries", type=int, default=1000)
    parser.add_argument("--drivers", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--depot", action="store_true", help="tokens of two channels: the driver's and a depot's")
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        backend = stack.enter_context(open_backend("sqlite", Path(stack.enter_context(TemporaryDirectory())), "pull"))
        server = stack.enter_context(our_server(backend))
        tenant = server.tenant("driver-pull")
        _seed(server, tenant, args.deliveries, 1000)

        def channels(i: int) -> tuple[str, ...]:
            return (f"driver:driver-{i}", "depot:dxb") if args.depot else (f"driver:driver-{i}",)

        drivers = [
            stack.enter_context(SyncClient(server.base, server.headers(tenant, f"driver-{i}", "driver", channels(i))))
            for i in range(min(args.drivers, args.deliveries))
        ]
        # Each driver's first pull, from the start: a cursor is bound to the scope it was issued to.
        cursors = [client.pull_to_end(None, 1000).cursor for client in drivers]
        rounds = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            for client, at in zip(drivers, cursors, strict=True):
                end = client.pull_to_end(at, 1000)
                if end.entities:
                    raise AssertionError(f"nothing changed, yet a pull brought {end.entities} entities")
            rounds.append((time.perf_counter() - t0) / len(drivers) * 1e6)
    print("µs per driver pull, each round:", ", ".join(f"{r:.0f}" for r in rounds))
    print(f"median of the rounds: {statistics.median(rounds):.0f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
