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
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, NamedTuple, Protocol, TypeVar

from sqlalchemy import Connection, Executable, RowMapping, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from syncstore.engine import UNREACHABLE, WRITE, is_sqlite, sqlite_synchronous
from syncstore.locks import TenantLocks
from syncstore.sqlite_sync import SqliteReader, SqliteWriter
from syncstore.store import StoreUnavailable, TenantNotFound
from syncstore.tables import tenants

__all__ = ["UNREACHABLE", "Locked", "PushTransaction", "SqlDatabase", "Steps", "lock_tenant"]

_T = TypeVar("_T")

_SNAPSHOT: dict[str, Any] = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
"""PostgreSQL: one snapshot for every statement of a transaction (``SqlDatabase.read(..., snapshot=True)``)."""

_LOCK_TENANT = (
    select(tenants.c.last_seq, tenants.c.purged_seq, tenants.c.chain_head)
    .where(tenants.c.id == bindparam("tenant_id"))
    .with_for_update()
)


def lock_tenant(conn: Connection, tenant_id: str) -> tuple[int, int, bytes | None]:
    """The tenant's counters, read under its lock: ``FOR UPDATE`` on PostgreSQL, the write lock's ``BEGIN
    IMMEDIATE`` on SQLite (the first statement). Raises ``TenantNotFound`` when the tenant has no row."""
    row = conn.execute(_LOCK_TENANT, {"tenant_id": tenant_id}).one_or_none()
    if row is None:
        raise TenantNotFound(tenant_id)
    return row.last_seq, row.purged_seq, bytes(row.chain_head) if row.chain_head is not None else None


def _committed(work: Callable[[Connection], _T], conn: Connection) -> _T:
    result = work(conn)
    conn.commit()
    return result


class Steps(Protocol):
    """Runs one step of an open transaction: a function of its (synchronous) connection."""

    async def __call__(self, work: Callable[[Connection], _T]) -> _T: ...


class PushTransaction(NamedTuple):
    """An open write transaction that holds a tenant's lock, run step by step (see ``push_transaction``)."""

    step: Steps
    last_seq: int
    chain_head: bytes | None


class _AsyncSteps:
    """Steps on an async connection: each runs in SQLAlchemy's greenlet, awaiting the driver per statement."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def __call__(self, work: Callable[[Connection], _T]) -> _T:
        return await self._conn.run_sync(work)


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
        self.reader = SqliteReader(engine.url, sqlite_synchronous(engine)) if self.sqlite else None
        self.writer = SqliteWriter(engine.url, sqlite_synchronous(engine)) if self.sqlite else None

    async def close(self) -> None:
        """Close the SQLite threads and their connections and dispose of the engine's pool."""
        # At close nothing reads or pushes any more: waiting for the threads is immediate.
        if self.reader is not None:
            self.reader.close()
        if self.writer is not None:
            self.writer.close()
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
                last_seq, purged_seq, head = await conn.run_sync(lock_tenant, tenant_id)
                yield Locked(conn, last_seq, purged_seq, head)
            finally:
                if conn.in_transaction():
                    await conn.rollback()

    @asynccontextmanager
    async def push_transaction(self, tenant_id: str) -> AsyncIterator[PushTransaction]:
        """``locked`` for a push: its reads and its write run as steps (functions of a synchronous connection).

        On SQLite every step runs whole on the ``SqliteWriter``'s thread, so a step costs one hop however
        many statements it sends; on PostgreSQL the steps run on the async connection of ``locked``.
        Rolled back unless a step commits. Raises ``TenantNotFound`` when the tenant has no row.
        """
        if self.writer is None:
            async with self.locked(tenant_id) as locked:
                yield PushTransaction(_AsyncSteps(locked.conn), locked.last_seq, locked.chain_head)
            return
        async with (
            self.process_lock(tenant_id),
            self.writer.transaction(functools.partial(lock_tenant, tenant_id=tenant_id)) as (last_seq, _, head),
        ):
            yield PushTransaction(self.writer.step, last_seq, head)

    async def write(self, work: Callable[[Connection], _T]) -> _T:
        """``work(connection)`` in a short write transaction of its own, committed when it returns.

        Rolled back if it raises. On SQLite one step on the writer thread, under the process lock (so it
        never lands inside a push's open transaction, and waits in the event loop rather than in SQLite's
        busy handler); on PostgreSQL on a pooled async connection, without the tenant lock.
        """
        if self.writer is None:
            async with self.connect(write=True) as conn:
                try:
                    result = await conn.run_sync(work)
                    await conn.commit()
                    return result
                finally:
                    if conn.in_transaction():
                        await conn.rollback()
        async with self._sqlite_writer, self.writer.transaction(functools.partial(_committed, work)) as result:
            return result

    async def read(self, work: Callable[[Connection], _T], *, snapshot: bool = False) -> _T:
        """Several reads in one go: ``work(connection)``, whose statements must only read.

        On SQLite in one read transaction on a reader thread: one hop and one snapshot for all of them
        (each hop costs about as much as a small query's whole read through SQLAlchemy). On PostgreSQL on
        one pooled connection in autocommit, like ``rows``: each statement its own snapshot, in order; with
        ``snapshot``, in one ``REPEATABLE READ READ ONLY`` transaction instead, so that every statement sees
        the same commits (a read-only transaction at that level never fails to serialize; it costs its
        ``BEGIN`` and ``COMMIT``). Use it when the statements' rows must agree with each other: one page
        of a pull read in several statements. Failing to reach the database raises ``StoreUnavailable``.
        """
        if self.reader is not None:
            try:
                return await self.reader.read(work)
            except UNREACHABLE as exc:
                raise StoreUnavailable(str(exc)) from exc
        async with self.connect() as conn:
            if not snapshot:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                return await conn.run_sync(work)
            await conn.execution_options(**_SNAPSHOT)
            try:
                result = await conn.run_sync(work)
                await conn.commit()  # nothing to write: ends the snapshot (a rollback would cost the same)
                return result
            finally:
                if conn.in_transaction():
                    await conn.rollback()

    async def rows(self, query: Executable, params: dict[str, Any] | None = None) -> Sequence[RowMapping]:
        """Run a read (with bound ``params``) in a transaction of its own and return all its rows.

        On SQLite through ``SqliteReader`` (one thread hop instead of one per driver call); failing to open
        the file raises ``StoreUnavailable``, as ``connect`` does. On PostgreSQL in autocommit: one statement
        is its own transaction anyway, and psycopg then sends neither ``BEGIN`` before it nor ``ROLLBACK``
        when the connection goes back to the pool (two round trips of three; the level is reset on return).
        """
        if self.reader is not None:
            try:
                return await self.reader.rows(query, params)
            except UNREACHABLE as exc:
                raise StoreUnavailable(str(exc)) from exc
        async with self.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            return (await conn.execute(query, params)).mappings().all()
