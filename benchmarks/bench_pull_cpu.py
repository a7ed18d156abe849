"""What a fresh device's pull costs the server's process per entity, without HTTP: the pull scenario, in process.

    python -m benchmarks.bench_pull_cpu [--backend sqlite|memory] [--entities 20000] [--rounds 5]

Seeds ``--entities`` deliveries (created, then updated once, as the ``pull`` scenario does) through
``PushService.push`` of one server's services in this process. Then each round, a new device pulls
the whole tenant in pages of 1,000 through the same ``PullService.pull`` (attachment statuses
included) that the HTTP handler calls, with an empty view cache. That is a device's first sync on
a server that has not served those versions yet, the slow case. Printed: the process's CPU time per
entity (all its threads: ``time.process_time``, which other work on the machine moves less than the
wall clock), each round and their median, and the wall-clock median.

No HTTP, no client on the other core, so a change to the read path shows here at a few per cent.
Alternate the two versions and compare within one run. The ``pull`` scenario's repetitions share
one server, and its later ones find versions in the view cache.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import msgspec

from benchmarks import workload
from benchmarks.inprocess import tenant_services
from benchmarks.wire import push_bodies
from syncproto.messages import PullRequest, PushRequest
from syncserver.auth.tokens import Principal
from syncserver.services import Services
from syncserver.sync.view_cache import ViewCache

PAGE = 1000
REPLICA = "seeder"


async def _seed(services: Services, who: Principal, entities: int) -> None:
    changes = workload.creates("dlv", entities) + workload.updates(REPLICA, "dlv", entities, entities + 1)
    for body in push_bodies(REPLICA, changes, 500):
        await services.push.push(who, msgspec.json.decode(body, type=PushRequest))


async def _pull_all(services: Services, who: Principal) -> int:
    pulled, cursor, more = 0, None, True
    while more:
        page = await services.pull.pull(who, PullRequest(cursor=cursor, limit=PAGE))
        pulled += len(page.changes)
        cursor, more = page.cursor, page.more
    return pulled


async def _rounds(url: str, data_dir: Path, entities: int, rounds: int) -> tuple[list[float], list[float]]:
    """CPU and wall-clock microseconds per entity, each round."""
    cpu, wall = [], []
    async with tenant_services(url, data_dir) as (services, who):
        await _seed(services, who, entities)
        for _ in range(rounds):
            services.pull.view_cache = ViewCache()  # nothing served yet: every version opened
            c0, t0 = time.process_time(), time.perf_counter()
            pulled = await _pull_all(services, who)
            c1, t1 = time.process_time(), time.perf_counter()
            if pulled != entities:
                raise AssertionError(f"pulled {pulled} of {entities} entities")
            cpu.append((c1 - c0) / pulled * 1e6)
            wall.append((t1 - t0) / pulled * 1e6)
    return cpu, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "memory"], default="sqlite")
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/sync.db" if args.backend == "sqlite" else "memory://"
        cpu, wall = asyncio.run(_rounds(url, Path(tmp), args.entities, args.rounds))
    print("CPU µs per entity, each round:", ", ".join(f"{r:.1f}" for r in cpu))
    print(f"wall-clock median: {statistics.median(wall):.1f} µs")
    print(f"CPU median of the rounds: {statistics.median(cpu):.1f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
