"""The store contract, run against FaultyStore over a MemoryStore, no fault armed."""

from __future__ import annotations

from tests.contract.backends import faulty_store
from tests.contract.store_suite import store_contract

globals().update(store_contract(faulty_store))
