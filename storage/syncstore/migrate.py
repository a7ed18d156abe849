"""Run the alembic migrations shipped in ``syncstore/migrations`` (no alembic.ini needed).

Call ``await upgrade(url)`` (or ``upgrade_sync(url)`` outside an event loop)
when a server starts. Several processes may start at once: the upgrade runs
in one transaction that first takes a database-wide lock, so one process
migrates and the others wait, then find the schema at head and do nothing.

* PostgreSQL: ``pg_advisory_xact_lock(MIGRATION_LOCK_KEY)``. The transaction-level
  variant of ``pg_advisory_lock``: released by COMMIT or ROLLBACK, so a failed
  upgrade can never leave it held on a pooled connection. PostgreSQL DDL is
  transactional, so a failed upgrade leaves the schema untouched.
* SQLite: ``BEGIN IMMEDIATE``, the file's write lock (see ``engine.py``).

Pitfall: the lock covers the ``upgrade`` of this module and ``alembic`` run by
hand through ``env.py``, not other tools that change the schema.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from syncstore.engine import WRITE, create_engine

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"

MIGRATION_LOCK_KEY: Final = int.from_bytes(b"syncstor", "big")
"""A fixed 63-bit advisory lock key ("syncstor" in ASCII), shared by every process."""


def alembic_config() -> Config:
    """An alembic ``Config`` pointing at the packaged migrations, built in code."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


async def upgrade(url: str, revision: str = "heads") -> None:
    """Migrate the database at ``url`` to ``revision`` under the migration lock."""
    config = alembic_config()

    def work(connection: Connection) -> None:
        # env.py runs the migrations on this connection instead of opening its own.
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    await run_locked(url, work)


def upgrade_sync(url: str, revision: str = "heads") -> None:
    """``upgrade`` for synchronous callers; fails inside a running event loop."""
    asyncio.run(upgrade(url, revision))


async def run_locked(url: str, work: Callable[[Connection], None]) -> None:
    """Run ``work`` on one connection, in one transaction, holding the migration lock."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(**WRITE)
            async with conn.begin():
                if conn.dialect.name == "postgresql":
                    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                await conn.run_sync(work)
    finally:
        await engine.dispose()
