"""Integrity: what the hash chain and the read path's rollback check cost, as shares of one run's own time.

    python -m benchmarks.bench_chain_cost                   # 20,000 deliveries, 10 updates each, SQLite

A whole-server before/after comparison on a shared 2-core machine moves by more
than the few percent being measured, so this measures the added work inside one
process and one run instead:

* **push**: pushes of 500 changes (creates, then updates of existing entities)
  through ``PushService``, timed whole; inside them, the time spent computing
  chain links (``chain.link`` with the ops' SHA-256), timed by wrapping it;
* **read check**: every read of an entity row also reads the seq of the
  entity's latest change (``tables.latest_seq_column``, in the same statement).
  Its cost is the difference between the push's entity lookups and the pull's
  page queries run with and without that column, on the same database, as a
  share of the push and of a fresh device's whole pull (pages of 1,000 through
  ``PullService``).

Prints each share (added work ÷ the whole) and writes
``benchmarks/results/chain-cost-sqlite-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select

from benchmarks.inprocess import tenant_services
from benchmarks.results import RESULTS_DIR, machine
from syncproto.messages import Applied, Change, PullRequest, PushRequest, SetOp
from syncserver.integrity import chain
from syncstore import SqlStore
from syncstore.tables import entities as entities_t
from syncstore.tables import latest_seq_column

BATCH = 500
T = TypeVar("T")


class Stopwatch:
    def __init__(self) -> None:
        self.seconds = 0.0

    def sync(self, fn: Callable[..., T]) -> Callable[..., T]:
        def timed(*args: Any, **kwargs: Any) -> T:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        return timed


async def run(entities: int, updates: int, url: str, data_dir: Path) -> dict[str, Any]:
    async with tenant_services(url, data_dir) as (s, who):
        tenant = who.tenant
        links = Stopwatch()
        chain.link = links.sync(chain.link)  # type: ignore[method-assign]
        total = entities * (1 + updates)
        n = 0
        t0 = time.perf_counter()
        for i in range(0, total, BATCH):
            batch = []
            for j in range(i, min(i + BATCH, total)):
                n += 1
                op = SetOp(field="status", value=f"s{j % 7}")
                batch.append(Change(str(uuid.uuid4()), n, "deliveries", f"dlv-{j % entities}", (j + 1, 0), {}, [op]))
            response = await s.push.push(who, PushRequest("loader-1", batch))
            assert all(isinstance(r, Applied) for r in response.results)
        push_s = time.perf_counter() - t0
        push_links = links.seconds
        cursor, pulled = None, 0
        t0 = time.perf_counter()
        while True:
            page = await s.pull.pull(who, PullRequest(cursor=cursor, limit=1000))
            pulled += len(page.changes)
            cursor = page.cursor
            if not page.more:
                break
        pull_s = time.perf_counter() - t0
        assert pulled == entities
        assert isinstance(s.store, SqlStore)
        engine = s.store.engine
        # The push's lookups: one query per batch of 500 entity ids (the updates load existing rows).
        ids = [f"dlv-{j}" for j in range(entities)]
        lookups = [ids[i : i + BATCH] for i in range(0, len(ids), BATCH)] * updates

        def lookup(chunk: list[str], check: bool) -> Any:
            cols = [entities_t, latest_seq_column()] if check else [entities_t]
            return select(*cols).where(
                entities_t.c.tenant_id == tenant,
                entities_t.c.collection == "deliveries",
                entities_t.c.entity_id.in_(chunk),
            )

        def page(after: int, check: bool) -> Any:
            cols = [entities_t, latest_seq_column()] if check else [entities_t]
            where = (entities_t.c.tenant_id == tenant) & (entities_t.c.seq > after)
            return select(*cols).where(where).order_by(entities_t.c.seq).limit(1001)

        async def timed(queries: list[Any]) -> float:
            t = time.perf_counter()
            async with engine.connect() as conn:
                for q in queries:
                    (await conn.execute(q)).all()
            return time.perf_counter() - t

        afters = [0]
        async with engine.connect() as conn:
            while True:
                seqs = [r.seq for r in (await conn.execute(page(afters[-1], False))).all()][:1000]
                if len(seqs) < 1000:
                    break
                afters.append(seqs[-1])
        extra_push = extra_pull = 0.0
        for _ in range(3):  # alternate, take the mean
            extra_push += await timed([lookup(c, True) for c in lookups]) - await timed(
                [lookup(c, False) for c in lookups]
            )
            extra_pull += await timed([page(a, True) for a in afters]) - await timed([page(a, False) for a in afters])
        extra_push, extra_pull = extra_push / 3, extra_pull / 3
    return {
        "changes": total,
        "entities": entities,
        "push_s": round(push_s, 3),
        "push_chain_links_s": round(push_links, 3),
        "push_read_check_s": round(extra_push, 3),
        "push_share_chain_links": round(push_links / push_s, 4),
        "push_share_read_check": round(extra_push / push_s, 4),
        "push_share_chain_total": round((push_links + extra_push) / push_s, 4),
        "pull_s": round(pull_s, 3),
        "pull_read_check_s": round(extra_pull, 3),
        "pull_share_read_check": round(extra_pull / pull_s, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--updates", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'sync.db'}"
        result = asyncio.run(run(args.entities, args.updates, url, Path(tmp) / "data"))
    result |= {"backend": "sqlite", "machine": machine()}
    print(json.dumps(result, indent=2))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (RESULTS_DIR / f"chain-cost-sqlite-{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
