"""What a pushed change costs the server's process, without HTTP: the storm's pushes, applied in-process.

    python -m benchmarks.bench_push_cpu [--backend sqlite|memory] [--devices 200] [--changes 100] [--rounds 5]

Each round, ``--devices`` new devices push the storm scenario's outbox (``--changes``
changes each to a delivery of its own: a status, a cash-on-delivery increment and an
odometer reading), all at once, through ``PushService.push`` of one server's services in
this process (group commit included), on a fresh tenant. The bodies are decoded before
the clock starts. Printed: microseconds per change, each round and their median.

No HTTP, no client on the other core: the figure moves only with the merge, sealing,
chain and write path, so before and after a change to that path can be compared on a
noisy machine in a few seconds (alternate the two versions; compare within one run).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import msgspec

from benchmarks.inprocess import tenant_services
from benchmarks.scenarios.storm import _outbox
from syncproto.messages import Applied, PushRequest


def _requests(first: int, devices: int, changes: int, prefix: str) -> list[PushRequest]:
    """The outboxes of devices ``first`` to ``first + devices - 1``, each under a replica id of this round."""
    out = []
    for i in range(first, first + devices):
        for body in _outbox(i, changes, 500):
            request = msgspec.json.decode(body, type=PushRequest)
            out.append(msgspec.structs.replace(request, replica=f"{prefix}{request.replica}"))
    return out


async def _rounds(url: str, data_dir: Path, devices: int, changes: int, rounds: int) -> list[float]:
    per_change = []
    async with tenant_services(url, data_dir) as (services, who):
        for r in range(rounds):
            requests = _requests(r * devices, devices, changes, f"round-{r}-")
            t0 = time.perf_counter()
            answers = await asyncio.gather(*(services.push.push(who, request) for request in requests))
            elapsed = time.perf_counter() - t0
            applied = sum(isinstance(result, Applied) for answer in answers for result in answer.results)
            if applied != devices * changes:
                raise AssertionError(f"{applied} of {devices * changes} changes applied")
            per_change.append(elapsed / applied * 1e6)
    return per_change


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "memory"], default="sqlite")
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/sync.db" if args.backend == "sqlite" else "memory://"
        rounds = asyncio.run(_rounds(url, Path(tmp), args.devices, args.changes, args.rounds))
    print("µs per change, each round:", ", ".join(f"{r:.1f}" for r in rounds))
    print(f"median of the rounds: {statistics.median(rounds):.1f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
