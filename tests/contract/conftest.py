"""Fixtures for the contract suites.

The store contract (``tests/contract/store_suite``) runs once per backend, in
``test_contract_<backend>.py``; the factories are in ``backends.py``:

* ``memory``: a fresh MemoryStore.
* ``sqlite``: a copy of a database file migrated once per session.
* ``postgres``: the session's private database (``pg_url``), migrated once; tests
  stay independent by using a fresh tenant id each (``tenant`` fixture).
* ``faulty``: ``FaultyStore`` over a MemoryStore, no fault armed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from syncstore import Store
from syncstore.migrate import upgrade_sync
from tests.contract import factories
from tests.contract.backends import SQL_BACKENDS, backend_url, sqlite_url

# The suite's modules are not named test_*.py; rewrite their asserts before a test module imports them.
pytest.register_assert_rewrite("tests.contract.store_suite")


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


@pytest.fixture(params=SQL_BACKENDS)
def sql_url(request: pytest.FixtureRequest) -> str:
    """A migrated database URL per SQL backend, for tests that open several stores on one database.

    Sync on purpose: migrating runs its own event loop.
    """
    return backend_url(request, request.param)


@pytest.fixture
async def tenant(store: Store) -> str:
    """A fresh tenant in the module's ``store``, unique so tests never see each other's rows."""
    tenant_id = factories.new_tenant_id()
    await store.create_tenant(tenant_id, factories.key(tenant_id), factories.NOW)
    return tenant_id
