"""Integrity: ``syncserver verify`` throughput, in changes per second, over a long change log.

    python -m benchmarks.bench_verify                       # 1,000,000 changes on SQLite
    python -m benchmarks.bench_verify --changes 100000 --backend postgres --pg-url postgresql+psycopg://...

Builds a tenant's log in process through ``PushService`` (the path a device's
push takes, chain and checkpoints included; batches of 500 changes from 100
replicas over 20,000 deliveries, so entities have many changes each), then
times ``Verifier.verify`` over it: every payload opened, every link recomputed,
every checkpoint and entity row checked. Prints and writes
``benchmarks/results/verify-<backend>-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.inprocess import tenant_services
from benchmarks.results import RESULTS_DIR, machine
from syncproto.messages import Applied, Change, PushRequest, SetOp
from syncserver.integrity.verify import Verifier

BATCH = 500
REPLICAS = 100
ENTITIES = 20_000


async def run(changes: int, url: str, data_dir: Path) -> dict[str, Any]:
    async with tenant_services(url, data_dir) as (s, who):
        tenant = who.tenant
        counters = [0] * REPLICAS
        t0 = time.perf_counter()
        for start in range(0, changes, BATCH):
            replica = (start // BATCH) % REPLICAS
            batch = []
            for i in range(start, min(start + BATCH, changes)):
                counters[replica] += 1
                op = SetOp(field="status", value=f"s{i % 7}")
                entity = f"dlv-{i % ENTITIES}"
                batch.append(Change(str(uuid.uuid4()), counters[replica], "deliveries", entity, (i + 1, 0), {}, [op]))
            response = await s.push.push(who, PushRequest(f"r{replica}", batch))
            assert all(isinstance(r, Applied) for r in response.results)
        ingest_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = await Verifier(s.store, s.keyring, s.schema).verify(tenant)
        verify_s = time.perf_counter() - t0
    assert report.ok, report.problems[:5]
    return {
        "changes": report.changes,
        "entities": report.entities,
        "checkpoints": report.checkpoints,
        "ingest_s": round(ingest_s, 2),
        "verify_s": round(verify_s, 2),
        "verify_changes_per_s": round(report.changes / verify_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--pg-url", default=None, help="a PostgreSQL database to use (postgres backend)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.backend == "sqlite":
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'sync.db'}"
        elif args.pg_url:
            url = args.pg_url
        else:
            parser.error("--backend postgres needs --pg-url")
        result = asyncio.run(run(args.changes, url, Path(tmp) / "data"))
    result |= {"backend": args.backend, "machine": machine()}
    print(json.dumps(result, indent=2))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (RESULTS_DIR / f"verify-{args.backend}-{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
