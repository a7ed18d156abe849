"""Async engines for the two SQL backends, with per-dialect connection setup.

SQLite (``sqlite+aiosqlite:///path``):

* WAL journal (readers never block the writer; see ``_enable_wal``), ``synchronous=NORMAL`` (durable
  at checkpoints, never corrupt; a power cut may lose the last commits),
  ``busy_timeout=10000`` ms and foreign keys, set on every new connection.
* The driver's own transaction handling is switched off (``isolation_level =
  None``) and we emit ``BEGIN`` ourselves in SQLAlchemy's ``begin`` event, as the
  SQLAlchemy SQLite docs recommend. This fixes pysqlite's legacy mode (no BEGIN
  before SELECT) and lets a write transaction say ``BEGIN IMMEDIATE``: it takes
  the write lock up front, so two processes never both hold a read lock and
  then deadlock upgrading it (SQLITE_BUSY that ``busy_timeout`` cannot resolve).
  Pick the mode per connection with ``await conn.execution_options(**WRITE)``.
* In-memory SQLite is refused: its single shared connection would mix the
  transactions of concurrent sessions. Use ``memory://`` (MemoryStore) instead.

PostgreSQL (``postgresql+psycopg://``): READ COMMITTED, the server default; a
connect timeout is set so ``ping`` fails instead of hanging on a dead host;
server-side prepared statements are off (see ``create_engine``).
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

SQLITE: Final = "sqlite+aiosqlite"
POSTGRES: Final = "postgresql+psycopg"

BEGIN_MODE: Final = "syncstore_sqlite_begin"
"""Execution option naming the SQLite BEGIN flavour; ignored by PostgreSQL."""

WRITE: Final = {BEGIN_MODE: "IMMEDIATE"}
"""Execution options for a connection that will write (take the lock at BEGIN)."""

_BEGIN_SQL: Final = {"DEFERRED": "BEGIN", "IMMEDIATE": "BEGIN IMMEDIATE"}

SQLITE_BUSY_TIMEOUT_MS: Final = 10_000

_SQLITE_PRAGMAS: Final = (
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)

PG_CONNECT_TIMEOUT_S: Final = 10


def parse_url(url: str | URL) -> URL:
    """Parse and check that the URL names a supported driver; raise ``ValueError`` otherwise."""
    parsed = make_url(url)
    if parsed.drivername == SQLITE:
        if parsed.database in (None, "", ":memory:"):
            raise ValueError("in-memory SQLite is not supported by SqlStore; use memory:// or a file path")
        return parsed
    if parsed.drivername == POSTGRES:
        return parsed
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}; use {SQLITE}:// or {POSTGRES}://")


def create_engine(url: str | URL, **engine_kwargs: Any) -> AsyncEngine:
    """An ``AsyncEngine`` for ``url`` with the connection setup described above.

    ``engine_kwargs`` go to ``create_async_engine`` (pool size, echo, ...).
    """
    parsed = parse_url(url)
    if parsed.drivername == POSTGRES and "connect_timeout" not in parsed.query:
        connect_args = dict(engine_kwargs.pop("connect_args", {}))
        connect_args.setdefault("connect_timeout", PG_CONNECT_TIMEOUT_S)
        engine_kwargs["connect_args"] = connect_args
    if parsed.drivername == POSTGRES:
        # No server-side prepared statements (psycopg prepares a query after 5 runs).
        # Pitfall: a prepared ``entity_id IN ($3, …, $502)`` may get PostgreSQL's
        # generic plan, which filters every row of the tenant against the list
        # instead of probing the primary key: 0.5 s per push at 20,000 entities,
        # growing with the table. A custom plan per execution costs ~1 ms.
        connect_args = dict(engine_kwargs.pop("connect_args", {}))
        connect_args.setdefault("prepare_threshold", None)
        engine_kwargs["connect_args"] = connect_args
    if parsed.drivername == POSTGRES and "poolclass" not in engine_kwargs:
        # Bounded, and sized for bursts: pushes wait on a per-tenant lock in the
        # event loop, not on a pooled connection; a full pool raises and answers 503.
        engine_kwargs.setdefault("pool_size", 10)
        engine_kwargs.setdefault("max_overflow", 20)
        engine_kwargs.setdefault("pool_timeout", 10)
    engine = create_async_engine(parsed, **engine_kwargs)
    if parsed.drivername == SQLITE:
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        event.listen(engine.sync_engine, "begin", _on_sqlite_begin)
    return engine


def _on_sqlite_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Stop the driver from emitting BEGIN itself; _on_sqlite_begin does it.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
        _enable_wal(cursor)
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    """Switch the file to WAL, waiting out a process that holds its lock.

    Pitfall: the switch needs the file's exclusive lock, and SQLite answers
    SQLITE_BUSY at once, without calling the busy handler, while another
    connection (say a second process migrating a new file) holds it. So this
    retries, with short sleeps, for as long as ``busy_timeout`` would wait. It
    runs on the driver's connection thread, never on the event loop.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _on_sqlite_begin(connection: Connection) -> None:
    mode = connection.get_execution_options().get(BEGIN_MODE, "DEFERRED")
    connection.exec_driver_sql(_BEGIN_SQL[mode])


def is_sqlite(engine: AsyncEngine | Engine) -> bool:
    return engine.dialect.name == "sqlite"
