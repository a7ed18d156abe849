"""``SqlDatabase``: what every part of ``SqlStore`` shares: the engine, pooled connections, the tenant lock.

``SqlStore`` builds one and hands it to each of its parts (``SqlKeys``,
``SqlAdmin``, ``SqlChannels``) in their constructors; nothing else is shared.

The tenant lock is taken in two layers:

1. In process, an ``asyncio.Lock``: one for the whole database on SQLite (it
   has a single writer anyway), one per tenant on PostgreSQL. Waiting pushes
   queue here rather than each pinning a pooled connection.
2. In the database, at the start of the transaction: ``BEGIN IMMEDIATE`` on
   SQLite (the file's write lock), ``SELECT ... FROM tenants ... FOR UPDATE`` on
   PostgreSQL (the tenant's row lock). This is what serializes server processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

from sqlalchemy import Executable, RowMapping, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from syncstore.engine import WRITE, is_sqlite
from syncstore.locks import TenantLocks
from syncstore.sqlite_reader import SqliteReader
from syncstore.store import StoreUnavailable, TenantNotFound
from syncstore.tables import tenants

UNREACHABLE = (OperationalError, InterfaceError, OSError)
"""Errors that mean the database could not be reached (mapped to ``StoreUnavailable``)."""


class Locked(NamedTuple):
    """An open write transaction that holds a tenant's lock, with the tenant's counters as locked."""

    conn: AsyncConnection
    last_seq: int
    purged_seq: int
    chain_head: bytes | None


class SqlDatabase:
    """One engine and its locks; made by ``SqlStore``, shared by its parts."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sqlite = is_sqlite(engine)
        self._tenant_locks = TenantLocks()
        self._sqlite_writer = asyncio.Lock()
        self.reader = SqliteReader(engine.url) if self.sqlite else None

    async def close(self) -> None:
        """Close the SQLite reader's threads and connections and dispose of the engine's pool."""
        if self.reader is not None:
            self.reader.close()  # at close nothing reads any more: waiting for its threads is immediate
        await self.engine.dispose()

    @asynccontextmanager
    async def connect(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """A pooled connection; failing to get one raises ``StoreUnavailable``."""
        try:
            conn = await self.engine.connect()
        except UNREACHABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        try:
            if write:
                await conn.execution_options(**WRITE)
            yield conn
        finally:
            await conn.close()

    def process_lock(self, tenant_id: str) -> asyncio.Lock:
        """The in-process layer of the tenant lock."""
        return self._sqlite_writer if self.sqlite else self._tenant_locks(tenant_id)

    @asynccontextmanager
    async def locked(self, tenant_id: str) -> AsyncIterator[Locked]:
        """Both lock layers for ``tenant_id``, in an open write transaction; rolled back unless committed.

        Raises ``TenantNotFound`` when the tenant has no row.
        """
        async with self.process_lock(tenant_id), self.connect(write=True) as conn:
            try:
                query = (
                    select(tenants.c.last_seq, tenants.c.purged_seq, tenants.c.chain_head)
                    .where(tenants.c.id == tenant_id)
                    .with_for_update()
                )
                row = (await conn.execute(query)).one_or_none()
                if row is None:
                    raise TenantNotFound(tenant_id)
                head = bytes(row.chain_head) if row.chain_head is not None else None
                yield Locked(conn, row.last_seq, row.purged_seq, head)
            finally:
                if conn.in_transaction():
                    await conn.rollback()

    async def rows(self, query: Executable, params: dict[str, Any] | None = None) -> Sequence[RowMapping]:
        """Run a read (with bound ``params``) in a transaction of its own and return all its rows.

        On SQLite through ``SqliteReader`` (one thread hop instead of one per driver call); failing to open
        the file raises ``StoreUnavailable``, as ``connect`` does.
        """
        if self.reader is not None:
            try:
                return await self.reader.rows(query, params)
            except UNREACHABLE as exc:
                raise StoreUnavailable(str(exc)) from exc
        async with self.connect() as conn:
            return (await conn.execute(query, params)).mappings().all()
