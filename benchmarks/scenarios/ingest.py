"""1. Ingest: N new entities, then N updates of them, pushed in batches of 100, 500 and 1,000.

Per batch size and repetition, in alternating order (raw, ours, PouchDB, then
the reverse):

* **ours**: pushes over one keep-alive connection, bodies encoded before the
  clock starts; every result must be ``applied``. Reported as changes/s for
  the creates, the updates, and both together (``ingest``).
* **raw**: 2N rows of the size our server stored (change payload + entity
  state), in commits of the same batch size (:mod:`benchmarks.raw`).
* **PouchDB**: the same documents through ``_bulk_docs``, then the same
  updates with each document's ``_rev``.

Ratios are ours ÷ baseline inside each repetition.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

from benchmarks import workload
from benchmarks.peers.pouchdb import PouchDB, bulk_bodies
from benchmarks.raw import RawTable
from benchmarks.results import Result
from benchmarks.runner import Context, order
from benchmarks.server import our_server
from benchmarks.wire import SyncClient, push_bodies

DEFAULTS = {"entities": 10_000, "batches": "100,500,1000", "reps": 3}
QUICK = {"entities": 1_000, "batches": "100,500,1000", "reps": 2}
CALIBRATION = 200


def _batches(spec: object) -> list[int]:
    return [int(b) for b in str(spec).split(",") if b.strip()]


def creates_then_updates(client: SyncClient, prefix: str, n: int, batch: int) -> tuple[float, float]:
    """Push ``n`` new deliveries, then an update of each, from replica ``dev-<prefix>``; seconds of each half.

    Bodies are encoded before the clock starts; every result must be ``applied``.
    """
    replica = f"dev-{prefix}"
    create_bodies = push_bodies(replica, workload.creates(prefix, n), batch)
    update_bodies = push_bodies(replica, workload.updates(replica, prefix, n, n + 1), batch)
    return client.push_all(create_bodies), client.push_all(update_bodies)


def _ours(client: SyncClient, result: Result, prefix: str, n: int, batch: int) -> float:
    t_create, t_update = creates_then_updates(client, prefix, n, batch)
    result.add(f"ours create @{batch}", n / t_create, "changes/s")
    result.add(f"ours update @{batch}", n / t_update, "changes/s")
    rate = 2 * n / (t_create + t_update)
    result.add(f"ours ingest @{batch}", rate, "changes/s")
    return rate


def _pouch(pouch: PouchDB, db: str, result: Result, prefix: str, n: int, batch: int) -> float:
    bodies = bulk_bodies(workload.pouch_creates(prefix, n), batch)
    revs: dict[str, str] = {}
    t0 = time.perf_counter()
    for body in bodies:
        revs.update((r["id"], r["rev"]) for r in pouch.bulk_docs(db, body))
    t_create = time.perf_counter() - t0
    bodies = bulk_bodies(workload.pouch_updates(prefix, n, revs), batch)  # needs the revs: built between the clocks
    t0 = time.perf_counter()
    for body in bodies:
        pouch.bulk_docs(db, body)
    t_update = time.perf_counter() - t0
    result.add(f"pouchdb create @{batch}", n / t_create, "docs/s")
    result.add(f"pouchdb update @{batch}", n / t_update, "docs/s")
    rate = 2 * n / (t_create + t_update)
    result.add(f"pouchdb ingest @{batch}", rate, "docs/s")
    return rate


def _raw(raw: RawTable, result: Result, n: int, row_bytes: int, batch: int) -> dict[str, float]:
    rates = {}
    for method in raw.methods():
        rates[method] = 2 * n / raw.insert(method, 2 * n, row_bytes, batch)
        result.add(f"raw {method} @{batch}", rates[method], "rows/s")
    return rates


def run(ctx: Context, result: Result) -> None:
    n, reps, batches = int(ctx.params["entities"]), ctx.reps, _batches(ctx.params["batches"])
    with ExitStack() as stack:
        server = stack.enter_context(our_server(ctx.backend))
        pouch = ctx.start_pouchdb(stack, result)
        tenant = server.tenant("ingest")
        client = stack.enter_context(SyncClient(server.base, server.headers(tenant, "bench-ingest")))
        # Warm up and learn the stored row size, so the raw rows match ours.
        client.push_all(push_bodies("dev-cal", workload.creates("cal", CALIBRATION), CALIBRATION))
        client.push_all(push_bodies("dev-cal", workload.updates("dev-cal", "cal", CALIBRATION, CALIBRATION + 1), 500))
        row_bytes = ctx.backend.stored_row_bytes()
        result.params["row_bytes"] = row_bytes
        raw = RawTable(ctx.backend)
        db = pouch.create_db("ingest") if pouch else ""
        sides = ["raw", "ours", "pouchdb"] if pouch else ["raw", "ours"]
        task = ctx.progress.add_task(f"ingest {n:,} + {n:,} changes", total=reps * len(batches))
        for rep in range(reps):
            for batch in batches:
                prefix = f"r{rep}b{batch}"
                rates: dict[str, float] = {}
                for side in order(rep, sides):
                    if side == "ours":
                        rates["ours"] = _ours(client, result, prefix, n, batch)
                    elif side == "raw":
                        rates.update({f"raw {m}": r for m, r in _raw(raw, result, n, row_bytes, batch).items()})
                    elif pouch is not None:
                        rates["pouchdb"] = _pouch(pouch, db, result, prefix, n, batch)
                for name, rate in rates.items():
                    if name != "ours":
                        result.ratio(f"ours ÷ {name} @{batch}", rates["ours"], rate)
                ctx.progress.advance(task)
        _check(ctx, result, client, pouch, db, n, reps, batches)


def _check(
    ctx: Context,
    result: Result,
    client: SyncClient,
    pouch: PouchDB | None,
    db: str,
    n: int,
    reps: int,
    batches: list[int],
) -> None:
    """Every push result was already checked as applied; here the merged state must show the updates."""
    check_last_entity(client, result, f"r{reps - 1}b{batches[-1]}", n)
    if pouch is not None:
        info = pouch.http.get(f"/{db}").json()
        result.check("pouchdb doc count", n * reps * len(batches), info["doc_count"])


def check_last_entity(client: SyncClient, result: Result, prefix: str, n: int) -> None:
    """The last delivery of :func:`creates_then_updates` shows its creation and its update, and nothing else."""
    view = client.entity(workload.COLLECTION, workload.entity_id(prefix, n - 1))
    fields = {name: f["value"] for name, f in view["fields"].items()}
    expected = {
        "status": "delivered",
        "address": f"{n - 1} Sheikh Zayed Rd, Dubai",
        "cod_cents": workload.COD_CENTS,
        "scanned": [f"parcel-{n - 1}"],
    }
    result.check("merged state of the last entity", expected, fields)
    result.check("entity version vector", {f"dev-{prefix}": 2 * n}, view["vv"])
