"""Which index each query of the log, entity and channel tables uses: the evidence behind ADR 0029's index choices.

    python -m benchmarks.explain_indexes                    # SQLite, in a temporary directory
    python -m benchmarks.explain_indexes --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test

Runs the server's own services in process over a fresh tenant (pushes with
channels, conflicts, a delete, a rejected change; a dispatcher's and a driver's
pull; a history; a user export; tombstone collection; verify), records every
statement they send to the database, and prints the plan of each distinct
statement that reads ``entities``, ``changes`` or ``entity_channels``
(``EXPLAIN QUERY PLAN`` on SQLite; ``EXPLAIN`` on PostgreSQL with sequential
scans disabled, since a table of a few hundred rows is scanned whatever its
indexes).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from benchmarks.inprocess import tenant_services
from syncproto.messages import Change, DeleteOp, IncOp, PullRequest, PushRequest, SetOp
from syncserver.auth.tokens import Principal
from syncserver.integrity.verify import Verifier

TABLES = re.compile(r"\b(entities|changes|entity_channels)\b")


async def workload(url: str, data_dir: Path) -> tuple[str, list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH", "UPDATE", "DELETE")):
            seen.append((statement, parameters))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        async with tenant_services(url, data_dir) as (s, who):
            tenant = who.tenant
            batch = [
                Change(
                    uuid.uuid4().hex,
                    i + 1,
                    "deliveries",
                    f"dlv-{i}",
                    (1_765_000_000_000 + i, 0),
                    {},
                    [SetOp("status", "out_for_delivery"), SetOp("driver_id", f"d{i % 3}"), SetOp("depot", "dxb")],
                )
                for i in range(30)
            ]
            await s.push.push(who, PushRequest("desk", batch))
            await s.push.push(who, PushRequest("desk", batch[:2]))  # duplicates: answered from the dot index
            other = Principal(tenant, "driver-1", "driver", ("driver:d1",))
            racing = [Change(uuid.uuid4().hex, 1, "deliveries", "dlv-1", (1_765_000_000_100, 0), {}, [IncOp("x", 1)])]
            racing.append(Change(uuid.uuid4().hex, 2, "deliveries", "dlv-4", (1_765_000_000_200, 0), {}, [DeleteOp()]))
            racing.append(Change(uuid.uuid4().hex, 3, "deliveries", "dlv-7", (1_765_000_000_300, 0), {}, []))
            await s.push.push(other, PushRequest("phone-1", racing))
            await s.pull.pull(who, PullRequest())
            await s.pull.pull(other, PullRequest())
            await s.entity_history.history(who, "deliveries", "dlv-1", 0, 100)
            await s.subjects.export_user(tenant, "driver-1", "explain")
            await s.store.purge_tombstones(tenant, 2**62)
            await Verifier(s.store, s.keyring, s.schema).verify(tenant)
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    return tenant, seen


def plans(url: str, statements: list[tuple[str, Any]]) -> list[tuple[str, list[str]]]:
    sync_url = url.replace("+aiosqlite", "").replace("+psycopg", "+psycopg")
    engine = sa.create_engine(sync_url)
    out: list[tuple[str, list[str]]] = []
    distinct: dict[str, Any] = {}
    for statement, params in statements:
        if TABLES.search(statement) and "alembic" not in statement:
            distinct.setdefault(" ".join(statement.split()), params)
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        cursor = raw.cursor()
        if engine.dialect.name == "postgresql":
            cursor.execute("SET enable_seqscan = off")
        for statement, params in distinct.items():
            prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN (COSTS OFF) "
            cursor.execute(prefix + statement, params)
            rows = cursor.fetchall()
            lines = [str(r[-1]) if engine.dialect.name == "sqlite" else str(r[0]) for r in rows]
            out.append((statement, lines))
        raw.rollback()
    engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", help="an empty PostgreSQL database (its tables are created)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.pg_url or f"sqlite+aiosqlite:///{tmp}/explain.db"
        _tenant, statements = asyncio.run(workload(url, Path(tmp)))
        for statement, lines in plans(url, statements):
            print(statement)
            for line in lines:
                print("    " + line)
            print()


if __name__ == "__main__":
    main()
