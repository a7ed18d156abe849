"""2. Pull: a fresh client pulls M entities to the end (pages of 1,000).

Seeded once, untimed: M deliveries created and updated on our server, the same
M documents (created, then updated with their revs) in PouchDB, and M raw rows
of our stored size. Then per repetition, in alternating order:

* **ours**: a new device (new connection, cursor ``null``) pulls until
  ``more`` is false; every entity must arrive.
* **PouchDB**: ``_changes?include_docs=true&limit=1000`` from ``since=0`` to the end.
* **raw**: keyset ``SELECT`` of the raw rows in pages of 1,000 (the engine's read ceiling).
"""

from __future__ import annotations

import time
from contextlib import ExitStack

from benchmarks import workload
from benchmarks.peers.pouchdb import PouchDB, bulk_bodies
from benchmarks.raw import RawTable
from benchmarks.results import Result
from benchmarks.runner import Context, order
from benchmarks.server import OurServer, our_server
from benchmarks.wire import Json, OnPage, PullEnd, SyncClient, push_bodies

DEFAULTS = {"entities": 20_000, "page": 1000, "reps": 3}
QUICK = {"entities": 2_000, "page": 1000, "reps": 2}
PREFIX = "dlv"


def _seed_ours(server: OurServer, tenant: str, m: int) -> None:
    with SyncClient(server.base, server.headers(tenant, "seeder")) as client:
        client.push_all(push_bodies("seeder", workload.creates(PREFIX, m), 1000))
        client.push_all(push_bodies("seeder", workload.updates("seeder", PREFIX, m, m + 1), 1000))


def _seed_pouch(pouch: PouchDB, m: int) -> str:
    db = pouch.create_db("pull")
    revs: dict[str, str] = {}
    for body in bulk_bodies(workload.pouch_creates(PREFIX, m), 1000):
        revs.update((r["id"], r["rev"]) for r in pouch.bulk_docs(db, body))
    for body in bulk_bodies(workload.pouch_updates(PREFIX, m, revs), 1000):
        pouch.bulk_docs(db, body)
    return db


def run(ctx: Context, result: Result) -> None:
    m, page, reps = int(ctx.params["entities"]), int(ctx.params["page"]), ctx.reps
    with ExitStack() as stack:
        server = stack.enter_context(our_server(ctx.backend))
        pouch = ctx.start_pouchdb(stack, result)
        task = ctx.progress.add_task(f"pull {m:,} entities", total=reps + 1)
        tenant = server.tenant("pull")
        _seed_ours(server, tenant, m)
        raw = RawTable(ctx.backend)
        raw.insert(raw.methods()[0], m, ctx.backend.stored_row_bytes(), 1000)
        db = _seed_pouch(pouch, m) if pouch else ""
        ctx.progress.advance(task)
        sides = ["raw", "ours", "pouchdb"] if pouch else ["raw", "ours"]
        for rep in range(reps):
            rates: dict[str, float] = {}
            for side in order(rep, sides):
                if side == "ours":
                    rates["ours"] = _pull_ours(server, tenant, rep, m, page, result)
                elif side == "raw":
                    seconds, rows = raw.scan(page)
                    result.check("raw rows read", m, rows)
                    rates["raw select"] = rows / seconds
                    result.add("raw select", rates["raw select"], "rows/s")
                elif pouch is not None:
                    rates["pouchdb"] = _pull_pouch(pouch, db, m, page, result)
            for name, rate in rates.items():
                if name != "ours":
                    result.ratio(f"ours ÷ {name}", rates["ours"], rate)
            ctx.progress.advance(task)


def fresh_pull(
    server: OurServer, tenant: str, device: str, page: int, on_page: OnPage | None = None, up_to: int | None = None
) -> tuple[float, PullEnd]:
    """A fresh device of a tenant-wide user (a dispatcher: new token, new connection, no cursor) pulls.

    It pulls to the end, or stops after the page that brings it to ``up_to`` entities; returns the
    seconds the pull took (the connection is opened before the clock starts) and where it ended.
    """
    with SyncClient(server.base, server.headers(tenant, device, "dispatcher")) as client:
        t0 = time.perf_counter()
        end = client.pull_to_end(None, page, on_page=on_page, up_to=up_to)
        return time.perf_counter() - t0, end


def _pull_ours(server: OurServer, tenant: str, rep: int, m: int, page: int, result: Result) -> float:
    last: list[Json] = []
    seconds, end = fresh_pull(
        server, tenant, f"fresh-{rep}", page, on_page=lambda items: last.__setitem__(slice(None), items[-1:])
    )
    result.check("entities pulled", m, end.entities)
    fields = {k: v["value"] for k, v in last[0]["fields"].items()}
    # Created early, updated late: met on the last page, it must still bring its creation's address.
    result.check(
        "last entity's merged fields",
        {"status": "delivered", "cod_cents": workload.COD_CENTS, "has address": True},
        {"status": fields.get("status"), "cod_cents": fields.get("cod_cents"), "has address": "address" in fields},
    )
    rate = end.entities / seconds
    result.add("ours pull", rate, "entities/s")
    return rate


def _pull_pouch(pouch: PouchDB, db: str, m: int, page: int, result: Result) -> float:
    t0 = time.perf_counter()
    count, last = pouch.changes_to_end(db, page)
    seconds = time.perf_counter() - t0
    result.check("pouchdb docs pulled", m, count)
    result.check("pouchdb last doc updated", "delivered", last.get("status"))
    rate = count / seconds
    result.add("pouchdb _changes", rate, "docs/s")
    return rate
