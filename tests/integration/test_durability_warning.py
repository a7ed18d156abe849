"""At start the server says so when an ``applied`` answer would not survive a power cut, and is quiet otherwise."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncserver.services import warn_if_not_durable
from syncstore import open_store
from syncstore.migrate import upgrade


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.warnings: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.warnings.append(record.getMessage())


@pytest.fixture
def captured() -> Iterator[Captured]:
    handler = Captured()
    logger = logging.getLogger("syncserver")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.setLevel(old)
    logger.removeHandler(handler)


@pytest.mark.parametrize(("level", "warned"), [("FULL", False), ("EXTRA", False), ("NORMAL", True)])
async def test_sqlite_below_full_is_reported(tmp_path: Path, captured: Captured, level: str, warned: bool) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}"
    await upgrade(url)
    store = open_store(url, sqlite_synchronous=level)
    try:
        await warn_if_not_durable(store)
    finally:
        await store.close()
    assert bool(captured.warnings) == warned, captured.warnings
    if warned:
        assert captured.warnings == [
            "durability: SQLite synchronous=NORMAL: a power cut may lose the last acknowledged commits"
        ]


@pytest.mark.postgres
@pytest.mark.parametrize(("options", "warned"), [("", False), ("?options=-csynchronous_commit%3Doff", True)])
async def test_postgres_asynchronous_commit_is_reported(
    pg_url: str, captured: Captured, options: str, warned: bool
) -> None:
    store = open_store(pg_url + options)
    try:
        await warn_if_not_durable(store)
    finally:
        await store.close()
    expected = ["durability: PostgreSQL synchronous_commit=off: a crash may lose the last acknowledged commits"]
    assert captured.warnings == (expected if warned else [])


async def test_a_database_that_is_down_does_not_stop_the_start(captured: Captured) -> None:
    from syncserver.testing import free_port

    store = open_store(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere")
    try:
        await warn_if_not_durable(store)
    finally:
        await store.close()
    assert captured.warnings == []
