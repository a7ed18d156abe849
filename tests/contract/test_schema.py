"""The migrations build exactly ``syncstore.tables``, on both databases, once, even when raced."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from syncstore.engine import create_engine
from syncstore.migrate import alembic_config, run_locked, upgrade
from syncstore.tables import metadata
from tests import services
from tests.contract.backends import sqlite_url

TABLES = {
    "tenants",
    "tenant_keys",
    "replicas",
    "entities",
    "changes",
    "conflicts",
    "dead_letters",
    "audit_log",
    "conflict_overrides",
    "entity_channels",
    "attachments",
    "attachment_refs",
    "chain_checkpoints",
    "entity_purges",
    "verifications",
    "log_names",
}


@pytest.fixture(
    params=[pytest.param("sqlite", id="sqlite"), pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)]
)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all: a new SQLite file or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
    else:
        with services.private_database("migrations") as url:
            yield url


async def inspect_db(url: str, fn: Any) -> Any:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def schema_diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
    return list(compare_metadata(context, metadata))


def current_revision(conn: Connection) -> set[str]:
    """The revisions the database is at: one per branch (the server migrates to all heads)."""
    return set(MigrationContext.configure(conn).get_current_heads())


def script_heads() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def table_names(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


async def test_migrations_build_exactly_the_tables_module(empty_url: str) -> None:
    await upgrade(empty_url)

    assert await inspect_db(empty_url, schema_diff) == []
    assert await inspect_db(empty_url, table_names) == {*TABLES, "alembic_version"}
    assert await inspect_db(empty_url, current_revision) == script_heads()


async def test_racing_upgrades_migrate_once(empty_url: str) -> None:
    # Separate engines, as in separate processes: only the database lock orders them.
    await asyncio.gather(*(upgrade(empty_url) for _ in range(4)))

    assert await inspect_db(empty_url, schema_diff) == []
    assert await inspect_db(empty_url, current_revision) == script_heads()


async def test_downgrade_to_base_drops_everything_and_upgrade_restores_it(empty_url: str) -> None:
    await upgrade(empty_url)
    config = alembic_config()

    def downgrade(conn: Connection) -> None:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")

    await run_locked(empty_url, downgrade)
    assert await inspect_db(empty_url, table_names) == {"alembic_version"}

    await upgrade(empty_url)
    assert await inspect_db(empty_url, schema_diff) == []


def test_the_migrations_have_one_head() -> None:
    """``alembic upgrade head`` (storage/SCHEMA.md) works only with a single head: a new branch must be merged."""
    assert len(script_heads()) == 1, script_heads()


def test_packaged_migrations_are_complete() -> None:
    directory = alembic_config().get_main_option("script_location")
    assert directory is not None
    files = {p.relative_to(directory).as_posix() for p in Path(directory).rglob("*") if p.suffix in {".py", ".mako"}}
    assert {
        "env.py",
        "script.py.mako",
        "versions/0001_initial.py",
        "versions/0003_admin.py",
        "versions/0002_access.py",
    } <= files


async def test_a_downgrade_past_patch_tokens_is_refused_while_an_attachment_uses_them(empty_url: str) -> None:
    """The previous release names objects ``<index>`` and opens them without a token: after a downgrade every
    attachment uploaded since would be unreadable, silently. Refused, as long as one row has tokens."""
    from syncstore import attachment_store_for, open_store
    from tests.contract.factories import NOW, key
    from tests.contract.store_suite.attachments import record

    await upgrade(empty_url)
    store = open_store(empty_url)
    try:
        await store.create_tenant("acme", key("acme"), NOW)
        meta = attachment_store_for(store)
        await meta.create_attachment(record("acme", "a1", state="available", chunk_tokens="0:aaaaaaaaaaaa"))
    finally:
        await store.close()

    def downgrade(conn: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, "0010_attachment_owner_index")

    with pytest.raises(RuntimeError, match="1 attachments name their objects with PATCH tokens"):
        await run_locked(empty_url, downgrade)
    assert await inspect_db(empty_url, current_revision) == script_heads()  # nothing was undone
