"""8. Footprint: bytes on disk per delivery record, by table and index, beside the record's JSON.

N delivery records of nine fields (seven registers, a counter and a set; about
290 bytes as plain JSON) are pushed in batches of 500, then updated ``updates``
times each. After each phase the scenario measures, on the server's own
database:

* **SQLite**: every table and index with the ``dbstat`` virtual table, after a
  WAL checkpoint (``TRUNCATE``), and the file's size;
* **PostgreSQL**: ``pg_table_size`` of every table (with its TOAST) and
  ``pg_relation_size`` of every index of the server's schema. A ``VACUUM``
  runs after each round of updates, as autovacuum would between bursts, so
  the figure is the space the live rows keep plus the free space PostgreSQL
  holds for reuse.

Figures are bytes per record; ratios are ours ÷ the record's JSON size, and ours ÷
PouchDB-server's data directory holding the same documents (after its own
compaction), when the peer is installed.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks.peers.pouchdb import PouchDB, bulk_bodies
from benchmarks.results import Result
from benchmarks.runner import Context
from benchmarks.server import our_server
from benchmarks.wire import Json, SyncClient, change, now_ms, push_bodies

DEFAULTS = {"records": 10_000, "updates": 10, "batch": 500, "ids": "hex"}
QUICK = {"records": 1_000, "updates": 2, "batch": 500, "ids": "hex"}
REPLICA = "dev-footprint"
SDK_REPLICA = "web-6e2a9f0c-1d3b-4c5e-8f7a-9b0c1d2e3f40"
"""``--param ids=sdk``: a replica id and change ids as the browser SDK makes them (``web-`` and a UUID;
``crypto.randomUUID()`` per change). The default, ``hex``, is the scenario as first measured: a short
replica id and 32 hex digits per change id."""
STATUSES = ("out_for_delivery", "delivered", "failed", "pending")


def record(i: int) -> dict[str, Any]:
    """One delivery as an app would store it: nine fields, about 290 bytes of JSON."""
    return {
        "status": "out_for_delivery",
        "driver_id": f"driver-{i % 200:03d}",
        "depot": f"depot-{i % 12:02d}",
        "customer": f"Customer {i:06d} Al Mansouri",
        "phone": f"+9715{i:08d}",
        "address": f"Villa {i % 900}, Street {i % 77}, Al Barsha 1, Dubai, United Arab Emirates",
        "eta": "2026-12-06T14:30:00Z",
        "cod_cents": 12_500,
        "scanned": [f"PCL-{i:07d}-A"],
    }


def _create_ops(rec: dict[str, Any]) -> list[Json]:
    ops: list[Json] = [
        {"op": "set", "field": k, "value": v} for k, v in rec.items() if k not in ("cod_cents", "scanned")
    ]
    ops.append({"op": "inc", "field": "cod_cents", "by": rec["cod_cents"]})
    ops.extend({"op": "add", "field": "scanned", "value": v} for v in rec["scanned"])
    return ops


def _update_ops(i: int, round_: int) -> list[Json]:
    return [
        {"op": "set", "field": "status", "value": STATUSES[(i + round_) % len(STATUSES)]},
        {"op": "set", "field": "eta", "value": f"2026-12-06T{10 + round_ % 10:02d}:{i % 60:02d}:00Z"},
        {"op": "inc", "field": "cod_cents", "by": -50},
    ]


def _change_id(ids: str) -> str | None:
    return str(uuid.uuid4()) if ids == "sdk" else None  # None: the wire's default, 32 hex digits


def _creates(n: int, ids: str = "hex") -> list[Json]:
    wall = now_ms()
    return [change(i + 1, f"dlv-{i}", _create_ops(record(i)), (wall, i), change_id=_change_id(ids)) for i in range(n)]


def _updates(n: int, round_: int, ids: str = "hex") -> Iterator[Json]:
    """Round ``round_`` (1-based) of updates; numbering continues after the creates."""
    wall = now_ms()
    replica = _replica(ids)
    for i in range(n):
        seq = round_ * n + i + 1
        ops = _update_ops(i, round_)
        yield change(seq, f"dlv-{i}", ops, (wall, i), context={replica: seq - 1}, change_id=_change_id(ids))


def _replica(ids: str) -> str:
    return SDK_REPLICA if ids == "sdk" else REPLICA


def json_bytes(n: int) -> float:
    return sum(len(json.dumps(record(i), separators=(",", ":")).encode()) for i in range(n)) / n


def sqlite_sizes(path: Path) -> dict[str, int]:
    """Bytes per table and index (``dbstat``), after a checkpoint folds the WAL into the file."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    sizes = {str(name): int(size) for name, size in rows}
    sizes["(file)"] = path.stat().st_size
    return sizes


def postgres_sizes(conninfo: str) -> dict[str, int]:
    """Bytes per table (with its TOAST) and per index of the public schema, after VACUUM."""
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM")
        rows = conn.execute(
            "SELECT c.relname, CASE c.relkind WHEN 'r' THEN pg_table_size(c.oid) ELSE pg_relation_size(c.oid) END"
            " FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace"
            " WHERE s.nspname = 'public' AND c.relkind IN ('r', 'i')"
        ).fetchall()
    sizes = {str(name): int(size) for name, size in rows if size}
    sizes["(total)"] = sum(sizes.values())
    return sizes


def vacuum(ctx: Context) -> None:
    """On PostgreSQL, what autovacuum does between bursts: dead row versions become free space."""
    if ctx.backend.name == "postgres":
        import psycopg

        with psycopg.connect(ctx.backend.conninfo, autocommit=True) as conn:
            conn.execute("VACUUM")


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _pouch_phase(pouch: PouchDB, db: str, docs: list[dict[str, Any]], revs: dict[str, str]) -> None:
    body_docs = [{**d, "_rev": revs[d["_id"]]} if d["_id"] in revs else d for d in docs]
    for body in bulk_bodies(body_docs, 500):
        revs.update((r["id"], r["rev"]) for r in pouch.bulk_docs(db, body))


def _pouch_compact(pouch: PouchDB, db: str) -> None:
    pouch.http.post(f"/{db}/_compact", headers={"Content-Type": "application/json"}).raise_for_status()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and pouch.http.get(f"/{db}").json().get("compact_running"):
        time.sleep(0.2)


class Measure:
    def __init__(self, ctx: Context, result: Result, n: int, json_size: float) -> None:
        self.ctx, self.result, self.n, self.json_size = ctx, result, n, json_size

    def ours(self, phase: str) -> float:
        backend = self.ctx.backend
        sizes = sqlite_sizes(backend.sqlite_path) if backend.name == "sqlite" else postgres_sizes(backend.conninfo)
        total_key = "(file)" if backend.name == "sqlite" else "(total)"
        for name, size in sorted(sizes.items(), key=lambda kv: -kv[1]):
            if name != total_key and size / self.n >= 1:
                self.result.add(f"{phase} {name}", size / self.n, "bytes/record")
        per_record = sizes[total_key] / self.n
        self.result.add(f"{phase} ours", per_record, "bytes/record")
        self.result.ratio(f"ours ÷ JSON @{phase}", per_record, self.json_size)
        return per_record


def run(ctx: Context, result: Result) -> None:
    n, rounds, batch = int(ctx.params["records"]), int(ctx.params["updates"]), int(ctx.params["batch"])
    ids = str(ctx.params.get("ids", "hex"))
    if ids not in ("hex", "sdk"):
        raise ValueError(f"--param ids must be hex or sdk, not {ids!r}")
    json_size = json_bytes(n)
    result.params["json_bytes_per_record"] = round(json_size, 1)
    measure = Measure(ctx, result, n, json_size)
    with ExitStack() as stack:
        server = stack.enter_context(our_server(ctx.backend))
        pouch = ctx.start_pouchdb(stack, result)
        tenant = server.tenant("footprint")
        client = stack.enter_context(SyncClient(server.base, server.headers(tenant, "bench-footprint")))
        task = ctx.progress.add_task(f"footprint {n:,} records x {rounds} updates", total=rounds + 1)
        client.push_all(push_bodies(_replica(ids), _creates(n, ids), batch))
        ours_created = measure.ours("creates")
        ctx.progress.advance(task)
        for round_ in range(1, rounds + 1):
            client.push_all(push_bodies(_replica(ids), list(_updates(n, round_, ids)), batch))
            vacuum(ctx)
            ctx.progress.advance(task)
        ours_updated = measure.ours(f"{rounds} updates")
        _check(result, client, n, rounds)
        if pouch is not None:
            _pouch_side(ctx, result, pouch, n, rounds, (ours_created, ours_updated))


def _pouch_side(ctx: Context, result: Result, pouch: PouchDB, n: int, rounds: int, ours: tuple[float, float]) -> None:
    db = pouch.create_db("footprint")
    data = ctx.tmp / "pouchdb-data"
    revs: dict[str, str] = {}
    docs = [{"_id": f"dlv-{i}", **record(i)} for i in range(n)]
    _pouch_phase(pouch, db, docs, revs)
    _pouch_compact(pouch, db)
    created = _dir_bytes(data) / n
    result.add("creates pouchdb", created, "bytes/record")
    result.ratio("ours ÷ pouchdb @creates", ours[0], created)
    for round_ in range(1, rounds + 1):
        updated_docs = []
        for i, d in enumerate(docs):
            cod = d["cod_cents"] - 50 * round_
            updated_docs.append({**d, "status": STATUSES[(i + round_) % len(STATUSES)], "cod_cents": cod})
        _pouch_phase(pouch, db, updated_docs, revs)
    _pouch_compact(pouch, db)
    updated = _dir_bytes(data) / n
    result.add(f"{rounds} updates pouchdb", updated, "bytes/record")
    result.ratio(f"ours ÷ pouchdb @{rounds} updates", ours[1], updated)


def _check(result: Result, client: SyncClient, n: int, rounds: int) -> None:
    """The last record reads what its creation and updates wrote."""
    last = n - 1
    view = client.entity("deliveries", f"dlv-{last}")["fields"]
    expected_status = STATUSES[(last + rounds) % len(STATUSES)] if rounds else "out_for_delivery"
    result.check("last record status", expected_status, view["status"]["value"])
    result.check("last record cod", 12_500 - 50 * rounds, view["cod_cents"]["value"])
    result.check("last record customer", record(last)["customer"], view["customer"]["value"])
