"""The backends the contract suite runs against, as pytest params with readable ids."""

from __future__ import annotations

from pathlib import Path

import pytest

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
