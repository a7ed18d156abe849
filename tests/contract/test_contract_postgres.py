"""The store contract, run against SqlStore on PostgreSQL (a real server; required under CI)."""

from __future__ import annotations

import pytest

from tests.contract.backends import postgres_store
from tests.contract.store_suite import store_contract

pytestmark = pytest.mark.postgres

globals().update(store_contract(postgres_store))
