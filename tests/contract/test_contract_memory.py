"""The store contract, run against MemoryStore."""

from __future__ import annotations

from tests.contract.backends import memory_store
from tests.contract.store_suite import store_contract

globals().update(store_contract(memory_store))
