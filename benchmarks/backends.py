"""The storage engines a benchmark runs against, each private to one run.

* ``sqlite``: a database file in the run's temporary directory.
* ``postgres``: a throw-away database created on the local PostgreSQL (db
  ``test`` on 127.0.0.1:5432, trust auth, user ``postgres`` or ``root``; the
  ``SYNC_TEST_PG_*`` variables override, as for the tests) and dropped after.

If PostgreSQL cannot be reached, :class:`BackendUnavailable` says why, and the
runner turns it into a skip.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

BackendName = Literal["sqlite", "postgres"]
BACKENDS: tuple[BackendName, ...] = ("sqlite", "postgres")

PG_HOST = os.environ.get("SYNC_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("SYNC_TEST_PG_PORT", "5432"))
PG_ADMIN_DB = os.environ.get("SYNC_TEST_PG_DB", "test")
PG_USERS = (os.environ.get("SYNC_TEST_PG_USER", "postgres"), "root", os.environ.get("USER", ""))


class BackendUnavailable(RuntimeError):
    """The engine cannot be reached; the benchmark is skipped, not faked."""


@dataclass(frozen=True)
class Backend:
    name: BackendName
    url: str
    """SQLAlchemy URL for the server (``SYNC_DATABASE_URL``)."""
    tmp: Path

    @property
    def sqlite_path(self) -> Path:
        return Path(self.url.removeprefix("sqlite+aiosqlite:///"))

    @property
    def conninfo(self) -> str:
        """libpq URL for psycopg (PostgreSQL only)."""
        return self.url.replace("postgresql+psycopg://", "postgresql://", 1)

    def version(self) -> str:
        if self.name == "sqlite":
            return f"SQLite {sqlite3.sqlite_version}"
        import psycopg

        with psycopg.connect(self.conninfo) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return f"PostgreSQL {row[0] if row else '?'}"

    def stored_row_bytes(self) -> int:
        """Average bytes of one change-log payload plus one entity state, as the server stored them."""
        sql = (
            "SELECT (SELECT coalesce(avg({len}(payload)), 0) FROM changes)"
            " + (SELECT coalesce(avg({len}(state)), 0) FROM entities)"
        )
        if self.name == "sqlite":
            with sqlite3.connect(self.sqlite_path) as db:
                (size,) = db.execute(sql.format(len="length")).fetchone()
        else:
            import psycopg

            with psycopg.connect(self.conninfo) as conn:
                row = conn.execute(sql.format(len="octet_length")).fetchone()
                size = row[0] if row else 0
        return max(int(size or 0), 1)


def _pg_reachable() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=1):
            return True
    except OSError:
        return False


def _pg_user() -> str:
    import psycopg

    for user in PG_USERS:
        if not user:
            continue
        try:
            conninfo = f"host={PG_HOST} port={PG_PORT} dbname={PG_ADMIN_DB} user={user} connect_timeout=3"
            with psycopg.connect(conninfo) as conn:
                conn.execute("SELECT 1")
                return user
        except psycopg.OperationalError:
            continue
    raise BackendUnavailable(f"PostgreSQL on {PG_HOST}:{PG_PORT} accepted no trust login as {', '.join(PG_USERS)}")


@contextmanager
def private_postgres(tag: str) -> Iterator[str]:
    """Create a throw-away database, yield its SQLAlchemy URL, drop it afterwards."""
    if not _pg_reachable():
        raise BackendUnavailable(f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}; start it to run this backend")
    import psycopg

    user = _pg_user()
    name = f"bench_{tag}_{uuid.uuid4().hex[:10]}"
    admin = f"host={PG_HOST} port={PG_PORT} dbname={PG_ADMIN_DB} user={user} connect_timeout=5"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def open_backend(name: BackendName, tmp: Path, tag: str, pg_url: str | None = None) -> Iterator[Backend]:
    """A private database for one run; ``pg_url`` uses an existing PostgreSQL database instead."""
    if name == "sqlite":
        yield Backend(name, f"sqlite+aiosqlite:///{tmp / 'sync.db'}", tmp)
    elif pg_url:
        yield Backend(name, pg_url, tmp)
    else:
        with private_postgres(tag) as url:
            yield Backend(name, url, tmp)
