"""Backends for the contract suite: every test taking ``store`` runs once per backend.

* ``memory``: a fresh MemoryStore.
* ``sqlite``: a copy of a database file migrated once per session.
* ``postgres``: the session's private database (``pg_url``), migrated once; tests
  stay independent by using a fresh tenant id each (``tenant`` fixture).
* ``faulty``: ``FaultyStore`` over a MemoryStore, no fault armed.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from syncstore import MEMORY_URL, FaultyStore, MemoryStore, Store, open_store
from syncstore.migrate import upgrade_sync
from tests.contract import factories
from tests.contract.backends import BACKENDS, SQL_BACKENDS, SQLITE_FILES, sqlite_url

FAULTY = "faulty:"
"""Not a URL ``open_store`` takes: the ``store`` fixture builds this backend itself."""


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a migrated SQLite database, to copy per test."""
    directory = tmp_path_factory.mktemp("sqlite-template")
    upgrade_sync(sqlite_url(directory))
    return directory


@pytest.fixture(scope="session")
def migrated_pg_url(pg_url: str) -> str:
    upgrade_sync(pg_url)
    return pg_url


def backend_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    """A migrated database URL for a SQL backend, private to the test (sqlite) or shared (postgres)."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        for name in SQLITE_FILES:
            if (template / name).exists():
                shutil.copy(template / name, tmp_path / name)
        return sqlite_url(tmp_path)
    url: str = request.getfixturevalue("migrated_pg_url")
    return url


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """``memory://`` or a migrated database URL. Sync on purpose: migrating runs its own event loop."""
    backend: str = request.param
    if backend == "faulty":
        return FAULTY
    return MEMORY_URL if backend == "memory" else backend_url(request, backend, tmp_path)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = FaultyStore(MemoryStore()) if store_url == FAULTY else open_store(store_url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture(params=SQL_BACKENDS)
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database URL per SQL backend, for tests that open several stores on one database."""
    return backend_url(request, request.param, tmp_path)


@pytest.fixture
async def tenant(store: Store) -> str:
    """A fresh tenant in ``store``, unique so tests never see each other's rows."""
    tenant_id = factories.new_tenant_id()
    await store.create_tenant(tenant_id, factories.key(tenant_id), factories.NOW)
    return tenant_id
