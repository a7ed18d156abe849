"""Async engines for the two SQL backends, with per-dialect connection setup.

SQLite (``sqlite+aiosqlite:///path``):

* WAL journal (readers never block the writer; see ``_enable_wal``), ``synchronous=FULL`` (every
  commit fsyncs the WAL before it returns, so a change the server answered
  ``applied`` survives a power cut), ``busy_timeout=10000`` ms and foreign keys,
  set on every new connection. ``create_engine(url, sqlite_synchronous="NORMAL")``
  (the server's ``SYNC_SQLITE_SYNCHRONOUS``) trades durability for speed: still
  never corrupt, but a power cut may lose the last acknowledged commits.
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
server-side prepared statements are off (see ``create_engine``). Durability is
left to the server's ``synchronous_commit``, ``on`` by default (COMMIT returns
after the WAL is flushed); nothing here lowers it. A deployment that sets it to
``off`` (or ``fsync=off``) makes ``applied`` undurable, as NORMAL does for SQLite.
"""

from __future__ import annotations

import sqlite3
import time
import weakref
from typing import Any, Final, Literal

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
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

SqliteSynchronous = Literal["FULL", "EXTRA", "NORMAL"]
"""SQLite ``synchronous`` levels a store may run with; ``OFF`` (corruptible on a crash) is not one."""

SQLITE_SYNCHRONOUS: Final[tuple[SqliteSynchronous, ...]] = ("FULL", "EXTRA", "NORMAL")

DEFAULT_SQLITE_SYNCHRONOUS: Final[SqliteSynchronous] = "FULL"

_SQLITE_PRAGMAS: Final = (
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys=ON",
)

PG_CONNECT_TIMEOUT_S: Final = 10

UNREACHABLE: Final = (OperationalError, InterfaceError, OSError)
"""Errors that mean the database could not be reached (mapped to ``StoreUnavailable``)."""

_SYNCHRONOUS: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()
"""The ``synchronous`` level each SQLite engine was made with (``sqlite_synchronous``)."""


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


def create_engine(
    url: str | URL, *, sqlite_synchronous: str = DEFAULT_SQLITE_SYNCHRONOUS, **engine_kwargs: Any
) -> AsyncEngine:
    """An ``AsyncEngine`` for ``url`` with the connection setup described above.

    ``sqlite_synchronous`` is SQLite's ``PRAGMA synchronous`` (one of
    ``SQLITE_SYNCHRONOUS``; ignored for PostgreSQL). ``engine_kwargs`` go to
    ``create_async_engine`` (pool size, echo, ...).
    """
    if sqlite_synchronous not in SQLITE_SYNCHRONOUS:
        raise ValueError(f"sqlite_synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}")
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

        def on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
            on_sqlite_connect(sqlite_synchronous, dbapi_connection, record)

        event.listen(engine.sync_engine, "connect", on_connect)
        event.listen(engine.sync_engine, "begin", on_sqlite_begin)
        _SYNCHRONOUS[engine.sync_engine] = sqlite_synchronous
    return engine


def sqlite_synchronous(engine: AsyncEngine) -> str:
    """The ``synchronous`` level ``create_engine`` set up for this SQLite engine (the default for others)."""
    return _SYNCHRONOUS.get(engine.sync_engine, DEFAULT_SQLITE_SYNCHRONOUS)


def on_sqlite_connect(synchronous: str, dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Stop the driver from emitting BEGIN itself; on_sqlite_begin does it.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.execute(f"PRAGMA synchronous={synchronous}")  # one of SQLITE_SYNCHRONOUS, checked above
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


def on_sqlite_begin(connection: Connection) -> None:
    """Open the transaction (the driver's own BEGIN is off: ``on_sqlite_connect``), on the DBAPI cursor.

    Every SQLite read and write transaction begins here. Through ``exec_driver_sql`` the ``BEGIN`` took
    SQLAlchemy's whole execution path (events, a result), about half of a point read's 98 µs on a reader
    thread. A driver error is raised as SQLAlchemy's (``OperationalError`` and so on), as that path raised it,
    so a database that cannot be reached still maps to ``StoreUnavailable``.

    Pitfall: SQLAlchemy marks the ``Connection`` as beginning before this event and clears the mark only after
    the dialect's own begin, which an error here skips. Such a ``Connection`` never begins again: every later
    statement on it runs in autocommit. The push writer keeps its ``Connection`` (``SqliteWriter``), so after one
    ``BEGIN IMMEDIATE`` that gave up on a lock, its pushes were written statement by statement, seen half
    done and never rolled back. A failed BEGIN therefore invalidates the connection: its owner opens a new one.
    """
    statement = _BEGIN_SQL[connection.get_execution_options().get(BEGIN_MODE, "DEFERRED")]
    dbapi_error = connection.dialect.loaded_dbapi.Error
    cursor = connection.connection.cursor()
    try:
        cursor.execute(statement)
    except dbapi_error as exc:
        failed: Exception | None = exc
    else:
        failed = None
    finally:
        cursor.close()
    if failed is not None:
        connection.invalidate(failed)  # closes the driver's connection (see the pitfall above)
        raise DBAPIError.instance(statement, None, failed, dbapi_error, dialect=connection.dialect) from failed


def is_sqlite(engine: AsyncEngine | Engine) -> bool:
    return engine.dialect.name == "sqlite"


_SQLITE_LEVELS: Final = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


async def durability_warnings(engine: AsyncEngine) -> list[str]:
    """Why a commit on this database may not survive a power cut (empty when it does); one connection, read-only.

    SQLite: ``synchronous`` below FULL. PostgreSQL: ``synchronous_commit=off`` or
    ``fsync=off`` (server, role or URL ``options``). Servers log these at start.
    """
    async with engine.connect() as conn:
        if is_sqlite(engine):
            level = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar()
            if isinstance(level, int) and level < 2:
                name = _SQLITE_LEVELS.get(level, str(level))
                return [f"SQLite synchronous={name}: a power cut may lose the last acknowledged commits"]
            return []
        warnings = []
        for setting in ("synchronous_commit", "fsync"):
            if (await conn.exec_driver_sql(f"SHOW {setting}")).scalar() == "off":
                warnings.append(f"PostgreSQL {setting}=off: a crash may lose the last acknowledged commits")
        return warnings
