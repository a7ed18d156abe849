"""The store contract suite: every test a Store backend must pass, as one function of a store factory.

Like automerge-repo's storage-adapter tests, the suite is written once and run
against each backend by handing it a factory::

    # tests/contract/test_contract_memory.py
    from tests.contract.backends import memory_store
    from tests.contract.store_suite import store_contract

    globals().update(store_contract(memory_store))

``store_contract`` returns the suite's test functions and a ``store`` fixture
that opens a store with ``factory`` (and closes it after the test); putting
them in a test module's namespace makes pytest collect the whole suite there.
The ``tenant`` fixture (``tests/contract/conftest.py``) creates a fresh tenant
in that store. A factory gets the test's ``pytest.FixtureRequest``, so it can
ask for other fixtures (a temporary directory, a database URL).

The modules of the suite are named without ``test_`` so pytest collects them
only through ``store_contract``; their asserts are rewritten all the same
(``pytest.register_assert_rewrite`` in ``tests/contract/conftest.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from types import ModuleType

import pytest

from syncstore import Store
from tests.contract.store_suite import admin, attachments, channels, integrity, isolation, keys, push, reads, tenants

StoreFactory = Callable[[pytest.FixtureRequest], AbstractAsyncContextManager[Store]]
"""Opens a store for one test (its schema ready, its tenants the test's own to create) and closes it on exit.

Called outside the event loop (so it may migrate a database with its own loop);
the context manager it returns is entered in the test's loop.
"""

MODULES: tuple[ModuleType, ...] = (tenants, push, reads, isolation, admin, channels, keys, attachments, integrity)
"""The parts of the contract: ``Store``, then ``AdminStore``, ``ChannelStore``, ``KeyStore``, ``AttachmentStore``,
``IntegrityStore``."""


def store_contract(factory: StoreFactory) -> dict[str, object]:
    """Every contract test, plus a ``store`` fixture that opens its store with ``factory``."""

    @pytest.fixture
    def store_opener(request: pytest.FixtureRequest) -> AbstractAsyncContextManager[Store]:
        return factory(request)

    @pytest.fixture
    async def store(store_opener: AbstractAsyncContextManager[Store]) -> AsyncIterator[Store]:
        async with store_opener as opened:
            yield opened

    suite: dict[str, object] = {"store_opener": store_opener, "store": store}
    for module in MODULES:
        for name, test in vars(module).items():
            if name.startswith("test_") and callable(test):
                if name in suite:
                    raise ValueError(f"two contract tests are named {name}")
                suite[name] = test
    return suite
