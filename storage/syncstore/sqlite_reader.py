"""``SqliteReader``: one read on SQLite in one worker-thread hop, through the synchronous driver.

Through aiosqlite every driver call is its own hop to the driver's thread and
back to the event loop: ``BEGIN``, opening a cursor, executing, fetching,
closing, ``ROLLBACK`` when the pooled connection is returned. A point read (an
attachment row, the tenant row) is about eight hops, 2 ms on a two-core
machine, for a query SQLite answers in microseconds. This reader runs the
whole read (``BEGIN``, the statement, every row, ``ROLLBACK``) on one of a few
threads with SQLAlchemy's synchronous ``pysqlite`` driver, so the event loop
waits once. The connections get the same setup as the async engine's
(``busy_timeout``, foreign keys, WAL, our ``BEGIN``), so a read sees exactly what
it would have seen there: the last committed state of the file (WAL readers
never block the writer, nor it them).

Writes stay on the async engine, under the tenant lock. PostgreSQL needs none of
this: psycopg's async connection has no thread to hop to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from sqlalchemy import Executable, RowMapping, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import URL
from sqlalchemy.pool import ConnectionPoolEntry

from syncstore.engine import DEFAULT_SQLITE_SYNCHRONOUS, on_sqlite_begin, on_sqlite_connect

READ_THREADS: Final = 4
"""Reads that may run at once (SQLite reads in parallel in WAL mode and releases the GIL while it steps)."""


class SqliteReader:
    """Runs single-statement reads on SQLite; made and closed by ``SqlDatabase``."""

    def __init__(self, url: URL, threads: int = READ_THREADS) -> None:
        self.engine = create_sync_engine(
            url.set(drivername="sqlite+pysqlite"),
            pool_size=threads,
            max_overflow=0,
            # A pooled connection is used by whichever reader thread takes it, one at a time.
            connect_args={"check_same_thread": False},
        )

        def on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
            on_sqlite_connect(DEFAULT_SQLITE_SYNCHRONOUS, dbapi_connection, record)

        event.listen(self.engine, "connect", on_connect)
        event.listen(self.engine, "begin", on_sqlite_begin)
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="sqlite-read")

    async def rows(self, query: Executable, params: dict[str, Any] | None = None) -> Sequence[RowMapping]:
        """All rows of ``query`` (with bound ``params``), read in one transaction on a reader thread."""
        return await asyncio.get_running_loop().run_in_executor(self._threads, self._rows, query, params)

    def _rows(self, query: Executable, params: dict[str, Any] | None) -> Sequence[RowMapping]:
        with self.engine.connect() as conn:
            return conn.execute(query, params).mappings().all()

    def close(self) -> None:
        """Wait for reads in flight, then close the threads and every pooled connection."""
        self._threads.shutdown(wait=True)
        self.engine.dispose()
