"""The store contract, run against SqlStore on SQLite."""

from __future__ import annotations

from tests.contract.backends import sqlite_store
from tests.contract.store_suite import store_contract

globals().update(store_contract(sqlite_store))
