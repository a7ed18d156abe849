"""One driver's day, partly offline in tunnels, while a dispatcher edits the same deliveries.

The dispatcher plans the round; the driver goes stop by stop: leaves a GPS
trail, scans parcels, updates statuses, collects cash on delivery and writes
notes, without signal on some legs. Meanwhile the dispatcher cancels a
delivery the driver is completing, adds gate codes to notes and fixes an
address. At the end both sync, and the script prints the converged deliveries
and the conflicts the server logged.

Against a running server (``scripts/run``)::

    .venv/bin/syncserver tenant create acme
    export SYNC_URL=http://127.0.0.1:8000
    export DRIVER_TOKEN=$(.venv/bin/syncserver token issue --tenant acme --sub driver-17 \\
        --role driver --channel driver:driver-17)
    export DISPATCHER_TOKEN=$(.venv/bin/syncserver token issue --tenant acme --sub dispatcher-1 --role dispatcher)
    .venv/bin/python -m examples.driver_day

Benchmarks reuse ``run_day(driver, dispatcher, params)``: it drives two
``SyncClient``s of any transport and returns ``DayStats``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syncclient import ConflictDetected, Event, HttpTransport, RejectedChange, SyncClient, load_schema
from syncproto.messages import ConflictView

__all__ = ["DayParams", "DayStats", "fetch_conflicts", "main", "print_report", "run_day"]

COLLECTIONS = Path(__file__).resolve().parents[1] / "config" / "collections.toml"
STREETS = ("Al Wasl Rd", "Sheikh Zayed Rd", "Jumeirah St", "Al Khail Rd", "Hessa St")
NOTES = ("Ring twice", "Call on arrival", "Fragile 📦", "Leave at reception")


@dataclass(frozen=True)
class DayParams:
    driver_id: str = "driver-17"
    """The driver's user id: deliveries carry it in ``driver_id`` (the driver's channel)."""
    deliveries: int = 10
    parcels: int = 3
    gps_points: int = 12
    """Points per leg, appended in batches of four."""
    tunnels: int = 3
    """Legs driven without signal: the driver's writes queue up."""
    cod_every: int = 3
    """Every n-th delivery is cash on delivery."""
    dispatcher_edits: int = 4
    """Deliveries the dispatcher edits while the driver is on them."""
    seed: int = 17
    prefix: str = "dlv"
    """Entity id prefix; make it unique per run to share a server between runs."""


@dataclass
class DayStats:
    deliveries: list[str] = field(default_factory=list)
    driver_writes: int = 0
    dispatcher_writes: int = 0
    offline_writes: int = 0
    max_queue: int = 0
    """Most changes waiting in the driver's outbox at once."""
    syncs: int = 0
    sync_seconds: float = 0.0
    rejected: int = 0
    conflicts_seen: int = 0
    """``ConflictDetected`` events on the driver's device."""
    cod_expected: int = 0
    converged: bool = False


async def run_day(driver: SyncClient, dispatcher: SyncClient, params: DayParams | None = None) -> DayStats:
    """Simulate the day; both clients end synced. The caller owns (and closes) the clients."""
    p = params or DayParams()
    rng = random.Random(p.seed)
    stats = DayStats(deliveries=[f"{p.prefix}-{i:03d}" for i in range(p.deliveries)])

    def count(event: Event) -> None:
        if isinstance(event, ConflictDetected):
            stats.conflicts_seen += 1
        elif isinstance(event, RejectedChange):
            stats.rejected += 1

    unsubscribe = driver.subscribe(count)
    try:
        await _plan_round(dispatcher, p, rng, stats)
        await _sync(dispatcher, stats)
        await _sync(driver, stats)
        tunnels = set(rng.sample(range(p.deliveries), min(p.tunnels, p.deliveries)))
        edited = set(rng.sample(range(p.deliveries), min(p.dispatcher_edits, p.deliveries)))
        position = (25.20, 55.27)
        for i, entity in enumerate(stats.deliveries):
            before = stats.driver_writes
            position = _drive(driver, entity, position, p, rng, stats)
            _deliver(driver, entity, i, p, rng, stats)
            if i in edited:
                _dispatcher_edits(dispatcher, entity, rng, stats)
                await _sync(dispatcher, stats)
            stats.max_queue = max(stats.max_queue, driver.pending_count())
            if i in tunnels:
                stats.offline_writes += stats.driver_writes - before  # no signal: stays queued
            else:
                await _sync(driver, stats)
        # Back at the depot: everyone syncs until both hold the same state.
        for client in (driver, dispatcher, driver):
            await _sync(client, stats)
        mine, theirs = driver.collection("deliveries"), dispatcher.collection("deliveries")
        stats.converged = all(mine.view(e) == theirs.view(e) for e in stats.deliveries)
    finally:
        unsubscribe()
    return stats


async def _sync(client: SyncClient, stats: DayStats) -> None:
    began = time.perf_counter()
    await client.sync()
    stats.syncs += 1
    stats.sync_seconds += time.perf_counter() - began


async def _plan_round(dispatcher: SyncClient, p: DayParams, rng: random.Random, stats: DayStats) -> None:
    deliveries = dispatcher.collection("deliveries")
    with dispatcher.batch():  # one commit for the whole plan
        for i, entity in enumerate(stats.deliveries):
            cod = rng.randrange(50, 400) * 100 if i % p.cod_every == 0 else 0
            deliveries.set(
                entity,
                driver_id=p.driver_id,
                status="pending",
                address=f"{rng.randrange(1, 300)} {rng.choice(STREETS)}",
                cod_due_cents=cod,
                parcels=[f"{entity}-p{k}" for k in range(p.parcels)],
            )
            deliveries.edit_text(entity, "notes", 0, 0, rng.choice(NOTES))
            stats.dispatcher_writes += 2


def _drive(
    driver: SyncClient, entity: str, at: tuple[float, float], p: DayParams, rng: random.Random, stats: DayStats
) -> tuple[float, float]:
    deliveries = driver.collection("deliveries")
    deliveries.set(entity, status="out_for_delivery")
    stats.driver_writes += 1
    lat, lon = at
    points: list[dict[str, Any]] = []
    for _ in range(p.gps_points):
        lat, lon = lat + rng.uniform(-0.002, 0.002), lon + rng.uniform(-0.002, 0.002)
        points.append({"lat": round(lat, 6), "lon": round(lon, 6), "t": int(time.time() * 1000)})
        if len(points) == 4:
            deliveries.append(entity, "trail", *points)
            stats.driver_writes += 1
            points = []
    if points:
        deliveries.append(entity, "trail", *points)
        stats.driver_writes += 1
    return lat, lon


def _deliver(driver: SyncClient, entity: str, i: int, p: DayParams, rng: random.Random, stats: DayStats) -> None:
    deliveries = driver.collection("deliveries")
    record = deliveries.get(entity) or {}
    for parcel in record.get("parcels", []):
        deliveries.add(entity, "scanned", parcel)
        stats.driver_writes += 1
    due = int(record.get("cod_due_cents") or 0)
    if due:
        deliveries.inc(entity, "cod_cents", due)
        stats.cod_expected += due
        stats.driver_writes += 1
    notes = str(record.get("notes") or "")
    note = " — left with the neighbour 🏠" if rng.random() < 0.3 else " — signed by customer ✍️"
    deliveries.edit_text(entity, "notes", len(notes), 0, note)
    delivered = rng.random() > 0.1
    deliveries.set(entity, status="delivered" if delivered else "failed")
    stats.driver_writes += 2


def _dispatcher_edits(dispatcher: SyncClient, entity: str, rng: random.Random, stats: DayStats) -> None:
    """The dispatcher works from what it last pulled: these writes are concurrent with the driver's."""
    deliveries = dispatcher.collection("deliveries")
    deliveries.set(entity, status="failed")  # "the customer cancelled": delivered beats failed
    deliveries.edit_text(entity, "notes", 0, 0, f"Gate code {rng.randrange(1000, 9999)}. ")
    deliveries.set(entity, address=f"{rng.randrange(1, 300)} {rng.choice(STREETS)}, back entrance")
    stats.dispatcher_writes += 3


# --- command line -------------------------------------------------------------------------


async def fetch_conflicts(transport: HttpTransport, prefix: str) -> list[ConflictView]:
    """The server's conflict log (``GET /v1/conflicts``) for the day's deliveries."""
    found: list[ConflictView] = []
    after: str | None = None
    while True:
        page = await transport.conflicts(collection="deliveries", after=after, limit=500)
        found += [c for c in page.conflicts if c.entity.startswith(prefix)]
        if page.next is None:
            return found
        after = page.next


def print_report(driver: SyncClient, stats: DayStats, conflicts: list[ConflictView]) -> None:
    deliveries = driver.collection("deliveries")
    print(f"{'delivery':<16} {'status':<10} {'cod':>8} {'scans':>5} {'gps':>4}  notes")
    for entity in stats.deliveries:
        r = deliveries.get(entity) or {}
        cod = r.get("cod_cents", 0) / 100
        scans, gps = len(r.get("scanned", [])), len(r.get("trail", []))
        print(f"{entity:<16} {r.get('status', '-'):<10} {cod:>8.2f} {scans:>5} {gps:>4}  {r.get('notes', '')}")
    print(f"\n{len(conflicts)} conflicts logged by the server:")
    for c in conflicts:
        values = ", ".join(f"{v.value!r} by {v.user} ({v.replica})" for v in c.values)
        winner = c.winner.value if c.winner is not None else None
        print(f"  {c.id} {c.entity}.{c.field or '-'} [{c.kind}, rule {c.rule}]: {values} -> {winner!r}")
    print(
        f"\ndriver: {stats.driver_writes} writes ({stats.offline_writes} offline, queue up to {stats.max_queue}), "
        f"dispatcher: {stats.dispatcher_writes} writes, {stats.syncs} syncs in {stats.sync_seconds:.2f} s, "
        f"{stats.rejected} rejected, {stats.conflicts_seen} conflict events, converged: {stats.converged}"
    )


async def main(argv: list[str] | None = None) -> DayStats:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("SYNC_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--driver-token", default=os.environ.get("DRIVER_TOKEN"))
    parser.add_argument("--dispatcher-token", default=os.environ.get("DISPATCHER_TOKEN"))
    parser.add_argument("--driver-id", default="driver-17", help="the driver token's sub")
    parser.add_argument("--deliveries", type=int, default=DayParams.deliveries)
    parser.add_argument("--seed", type=int, default=DayParams.seed)
    parser.add_argument("--dir", type=Path, default=None, help="where the devices keep their files")
    args = parser.parse_args(argv)
    if not args.driver_token or not args.dispatcher_token:
        parser.error("set DRIVER_TOKEN and DISPATCHER_TOKEN (or pass --driver-token/--dispatcher-token)")
    run = uuid.uuid4().hex[:6]
    params = DayParams(driver_id=args.driver_id, deliveries=args.deliveries, seed=args.seed, prefix=f"dlv-{run}")
    schema = load_schema(COLLECTIONS) if COLLECTIONS.exists() else None
    with tempfile.TemporaryDirectory() as tmp:
        where = args.dir or Path(tmp)
        driver = SyncClient(args.url, args.driver_token, f"phone-{run}", where / f"phone-{run}.db", schema=schema)
        dispatcher = SyncClient(args.url, args.dispatcher_token, f"web-{run}", where / f"web-{run}.db", schema=schema)
        conflicts_api = HttpTransport(args.url, args.dispatcher_token)
        try:
            stats = await run_day(driver, dispatcher, params)
            print_report(driver, stats, await fetch_conflicts(conflicts_api, params.prefix))
        finally:
            await driver.aclose()
            await dispatcher.aclose()
            await conflicts_api.aclose()
    return stats


if __name__ == "__main__":
    asyncio.run(main())
