"""The backends the contract suite runs against: pytest params with readable ids, and store factories.

Each ``*_store`` function is a ``StoreFactory`` for ``store_contract``
(``tests/contract/store_suite``); ``test_contract_<backend>.py`` runs the suite with it.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from syncstore import FaultyStore, MemoryStore, Store, open_store

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("faulty", id="faulty"),
]
"""``faulty`` is the test double ``FaultyStore`` over a MemoryStore: with no fault armed it keeps the contract."""
SQL_BACKENDS = BACKENDS[1:3]

SQLITE_FILES = ("store.db", "store.db-wal", "store.db-shm")
"""A SQLite database and its WAL companions, copied together."""


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'store.db'}"


def backend_url(request: pytest.FixtureRequest, backend: str) -> str:
    """A migrated database URL for a SQL backend, private to the test (sqlite) or shared (postgres).

    Shared is safe: tests stay independent by using a fresh tenant id each (``tenant`` fixture).
    """
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        tmp_path: Path = request.getfixturevalue("tmp_path")
        for name in SQLITE_FILES:
            if (template / name).exists():
                shutil.copy(template / name, tmp_path / name)
        return sqlite_url(tmp_path)
    url: str = request.getfixturevalue("migrated_pg_url")
    return url


@asynccontextmanager
async def _closing(store: Store) -> AsyncIterator[Store]:
    try:
        yield store
    finally:
        await store.close()


def memory_store(request: pytest.FixtureRequest) -> AbstractAsyncContextManager[Store]:
    """A fresh ``MemoryStore``."""
    return _closing(MemoryStore())


def sqlite_store(request: pytest.FixtureRequest) -> AbstractAsyncContextManager[Store]:
    """A ``SqlStore`` on a copy of a SQLite database migrated once per session."""
    return _closing(open_store(backend_url(request, "sqlite")))


def postgres_store(request: pytest.FixtureRequest) -> AbstractAsyncContextManager[Store]:
    """A ``SqlStore`` on the session's private PostgreSQL database, migrated once."""
    return _closing(open_store(backend_url(request, "postgres")))


def faulty_store(request: pytest.FixtureRequest) -> AbstractAsyncContextManager[Store]:
    """``FaultyStore`` over a fresh ``MemoryStore``, no fault armed."""
    return _closing(FaultyStore(MemoryStore()))
