"""Raw ceilings: what the storage engine itself does with rows of the same size and count.

Rows are as large as one of our change-log payloads plus one entity state
(measured from the server's own database in the same run), written in the
same batch sizes, one commit per batch, into the same engine: the same SQLite
settings as the server (WAL, and the ``synchronous`` level the server runs with:
``SYNC_SQLITE_SYNCHRONOUS``, FULL by default, so both sides pay the same fsync per
commit) or the same PostgreSQL database. No encryption, no merge, no HTTP: this
is the ceiling, not a rival.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from benchmarks.backends import Backend
from syncserver.settings import Settings

_COLUMNS = "(t TEXT NOT NULL, seq BIGINT NOT NULL, id TEXT NOT NULL, entity TEXT NOT NULL, payload {blob} NOT NULL,"
_PK = " PRIMARY KEY (t, seq))"


def _rows(tenant: str, start: int, count: int, blob: bytes) -> Iterator[tuple[str, int, str, str, bytes]]:
    for i in range(start, start + count):
        yield (tenant, i, uuid.uuid4().hex, f"dlv-{i}", blob)


@dataclass
class RawTable:
    """One table of raw rows in the backend's engine; ``insert`` appends, ``scan`` reads back in pages."""

    backend: Backend
    name: str = ""
    tenant: str = ""
    next_seq: int = 0

    def __post_init__(self) -> None:
        self.name = self.name or f"raw_{uuid.uuid4().hex[:8]}"
        self.tenant = uuid.uuid4().hex
        blob = "BLOB" if self.backend.name == "sqlite" else "BYTEA"
        ddl = f"CREATE TABLE IF NOT EXISTS {self.name} " + _COLUMNS.format(blob=blob) + _PK
        if self.backend.name == "sqlite":
            with self._sqlite() as db:
                db.execute(ddl)
        else:
            import psycopg

            with psycopg.connect(self.backend.conninfo) as conn:
                conn.execute(ddl)

    def _sqlite(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.backend.tmp / "raw.db")
        db.execute("PRAGMA journal_mode=WAL")
        # The level the server under test reads from the same environment (validated there).
        db.execute(f"PRAGMA synchronous={Settings.from_env().sqlite_synchronous}")
        return db

    def methods(self) -> list[str]:
        return ["executemany"] if self.backend.name == "sqlite" else ["executemany", "copy"]

    def insert(self, method: str, count: int, row_bytes: int, batch: int) -> float:
        """Insert ``count`` rows in commits of ``batch``; seconds elapsed (row building included, as for us)."""
        start, self.next_seq = self.next_seq, self.next_seq + count
        blob = b"x" * row_bytes
        if self.backend.name == "sqlite":
            return self._insert_sqlite(start, count, blob, batch)
        return self._insert_postgres(start, count, blob, batch, copy=method == "copy")

    def _insert_sqlite(self, start: int, count: int, blob: bytes, batch: int) -> float:
        db = self._sqlite()
        try:
            t0 = time.perf_counter()
            for first in range(start, start + count, batch):
                n = min(batch, start + count - first)
                db.executemany(f"INSERT INTO {self.name} VALUES (?, ?, ?, ?, ?)", _rows(self.tenant, first, n, blob))
                db.commit()
            return time.perf_counter() - t0
        finally:
            db.close()

    def _insert_postgres(self, start: int, count: int, blob: bytes, batch: int, copy: bool) -> float:
        import psycopg

        with psycopg.connect(self.backend.conninfo) as conn, conn.cursor() as cur:
            t0 = time.perf_counter()
            for first in range(start, start + count, batch):
                rows = _rows(self.tenant, first, min(batch, start + count - first), blob)
                if copy:
                    with cur.copy(f"COPY {self.name} (t, seq, id, entity, payload) FROM STDIN") as cp:
                        for row in rows:
                            cp.write_row(row)
                else:
                    cur.executemany(f"INSERT INTO {self.name} VALUES (%s, %s, %s, %s, %s)", list(rows))
                conn.commit()
            return time.perf_counter() - t0

    def scan(self, page: int) -> tuple[float, int]:
        """Read every row back in keyset pages of ``page``; (seconds, rows)."""
        query = f"SELECT t, seq, id, entity, payload FROM {self.name} WHERE t = {{p}} AND seq > {{p}}"
        query += f" ORDER BY seq LIMIT {page}"
        count, after = 0, -1
        if self.backend.name == "sqlite":
            db = self._sqlite()
            try:
                t0 = time.perf_counter()
                while rows := db.execute(query.format(p="?"), (self.tenant, after)).fetchall():
                    count += len(rows)
                    after = rows[-1][1]
                return time.perf_counter() - t0, count
            finally:
                db.close()
        import psycopg

        with psycopg.connect(self.backend.conninfo) as conn:
            t0 = time.perf_counter()
            while rows := conn.execute(query.format(p="%s"), (self.tenant, after)).fetchall():
                count += len(rows)
                after = rows[-1][1]
            return time.perf_counter() - t0, count
