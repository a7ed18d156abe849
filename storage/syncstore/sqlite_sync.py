"""SQLite through the synchronous driver: one worker-thread hop per read and per step of a push.

Through aiosqlite every driver call is its own hop to the driver's thread and
back to the event loop: ``BEGIN``, opening a cursor, executing, fetching,
closing, ``ROLLBACK`` when the pooled connection is returned. A point read (an
attachment row, the tenant row) was about eight hops, 2 ms on a two-core
machine, for a query SQLite answers in microseconds; a push of 20 changes was
about thirty-five hops, three quarters of its time (benchmarks/README.md).

Here the same SQLAlchemy statements run with SQLAlchemy's synchronous
``pysqlite`` driver on threads of our own, so the event loop waits once per
read and once per step:

* ``SqliteReader``: a read (``BEGIN``, the statement, every row, ``ROLLBACK``)
  on one of a few threads. It sees exactly what it would have seen on the
  async engine: the last committed state of the file (WAL readers never block
  the writer, nor it them).
* ``SqliteWriter``: one thread and one connection for push transactions and
  short writes (attachment rows, ``SqlDatabase.write``). A push session's steps
  (lock the tenant, read the replicas, the entities, their channels, write and
  commit) each run there whole, in order. Other writes (tenant creation, key
  rotation, admin repairs) stay on the async engine; the process lock and
  ``BEGIN IMMEDIATE`` serialize them with these as before.

Both connect like the async engine (``busy_timeout``, foreign keys, WAL, the
configured ``synchronous`` level, our ``BEGIN``). PostgreSQL needs none of
this: psycopg's async connection has no thread to hop to.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar

from sqlalchemy import Connection, Engine, Executable, RowMapping, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import URL
from sqlalchemy.pool import ConnectionPoolEntry

from syncstore.engine import UNREACHABLE, WRITE, on_sqlite_begin, on_sqlite_connect
from syncstore.store import StoreUnavailable

READ_THREADS: Final = 4
"""Reads that may run at once (SQLite reads in parallel in WAL mode and releases the GIL while it steps)."""

_T = TypeVar("_T")


def sync_engine(url: URL, synchronous: str, connections: int) -> Engine:
    """A synchronous engine on the same file, set up like ``syncstore.engine.create_engine``'s connections."""
    engine = create_sync_engine(
        url.set(drivername="sqlite+pysqlite"),
        pool_size=connections,
        max_overflow=0,
        # A pooled connection is used by one thread at a time, not always the one that opened it.
        connect_args={"check_same_thread": False},
    )

    def on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        on_sqlite_connect(synchronous, dbapi_connection, record)

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", on_sqlite_begin)
    return engine


class _Threads:
    def __init__(self, engine: Engine, threads: int, name: str) -> None:
        self.engine = engine
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix=name)

    async def run(self, work: Callable[[], _T]) -> _T:
        """``work()`` on one of the threads; the event loop waits once."""
        return await asyncio.get_running_loop().run_in_executor(self._threads, work)

    def close(self) -> None:
        """Wait for work in flight, then close the threads and every pooled connection."""
        self._threads.shutdown(wait=True)
        self.engine.dispose()


class SqliteReader(_Threads):
    """Runs reads, each in a transaction of its own; made and closed by ``SqlDatabase``."""

    def __init__(self, url: URL, synchronous: str, threads: int = READ_THREADS) -> None:
        super().__init__(sync_engine(url, synchronous, threads), threads, "sqlite-read")

    async def rows(self, query: Executable, params: dict[str, Any] | None = None) -> Sequence[RowMapping]:
        """All rows of ``query`` (with bound ``params``), read in one transaction on a reader thread."""
        return await self.read(functools.partial(_all_rows, query, params))

    async def read(self, work: Callable[[Connection], _T]) -> _T:
        """``work(connection)`` in one read transaction on a reader thread: one hop, one snapshot, for its reads."""
        return await self.run(functools.partial(self._read, work))

    def _read(self, work: Callable[[Connection], _T]) -> _T:
        with self.engine.connect() as conn:
            return work(conn)


def _all_rows(query: Executable, params: dict[str, Any] | None, conn: Connection) -> Sequence[RowMapping]:
    return conn.execute(query, params).mappings().all()


class SqliteWriter(_Threads):
    """One thread and one connection for push transactions; their steps run there one at a time, in order.

    The caller holds the process lock around ``transaction``, so one transaction is open at a time. A
    step left running by a cancelled push still runs before the next transaction starts (one thread,
    first in first out), and the next ``transaction`` rolls back whatever such a push left open.
    """

    def __init__(self, url: URL, synchronous: str) -> None:
        super().__init__(sync_engine(url, synchronous, 1), 1, "sqlite-write")
        self._conn: Connection | None = None  # used on the writer thread only
        self._open = False
        """Whether the connection was in a transaction when the last step returned (set on the writer thread)."""
        self._settled = False
        """Whether the last step returned (not raised, not cancelled) and left no transaction open."""

    @asynccontextmanager
    async def transaction(self, first: Callable[[Connection], _T]) -> AsyncIterator[_T]:
        """A write transaction on the writer's connection (``BEGIN IMMEDIATE`` at its first statement).

        ``first(connection)`` is its first step, run in the same hop as the transaction's start; its result
        is what the ``with`` yields. Rolled back on exit unless a step committed it; the rollback runs even if
        the caller is cancelled. Leaving costs no hop when the last step returned with the transaction
        committed (a push's write, a short write). Failing to open the file raises ``StoreUnavailable``.
        """
        self._settled = False
        try:
            yield await self._ran(functools.partial(self._start, first))
        finally:
            if not self._settled:
                await asyncio.shield(self.run(self._end))

    async def step(self, work: Callable[[Connection], _T]) -> _T:
        """``work(connection)`` on the writer thread, inside the open ``transaction``."""
        return await self._ran(functools.partial(self._step, work))

    async def _ran(self, work: Callable[[], _T]) -> _T:
        """``work()`` on the writer thread; afterwards ``_settled`` tells whether it returned with nothing open.

        A step that raised or was cancelled (it may still be running) leaves ``_settled`` false, so the
        transaction's exit rolls back on the thread, after it.
        """
        self._settled = False
        result = await self.run(work)
        self._settled = not self._open  # written by the thread before the result was handed back
        return result

    def _step(self, work: Callable[[Connection], _T]) -> _T:
        if self._conn is None:
            raise RuntimeError("no write transaction is open")
        self._open = True
        result = work(self._conn)
        self._open = self._conn.in_transaction()
        return result

    def _start(self, first: Callable[[Connection], _T]) -> _T:
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            if conn is not None:
                conn.close()
            self._conn = None
            try:
                conn = self.engine.connect()
            except UNREACHABLE as exc:
                raise StoreUnavailable(str(exc)) from exc
            self._conn = conn.execution_options(**WRITE)
        if conn.in_transaction():
            conn.rollback()  # left by a push cancelled half-way
        return self._step(first)

    def _end(self) -> None:
        if self._conn is not None and self._conn.in_transaction():
            self._conn.rollback()

    def close(self) -> None:
        """Close the connection (on its thread), then the thread and the engine."""
        self._threads.submit(self._close).result()
        super().close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
