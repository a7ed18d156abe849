"""Alembic environment for syncstore, for SQLite and PostgreSQL.

Two ways in:

* ``syncstore.migrate.upgrade(url)`` passes an open connection, already inside
  the locked transaction, as ``config.attributes["connection"]``.
* ``alembic`` on the command line (``storage/alembic.ini``): the URL comes from
  ``-x url=...`` or ``sqlalchemy.url``; we open an async engine and take the
  same lock via ``syncstore.migrate.run_locked``.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from syncstore.migrate import run_locked
from syncstore.tables import metadata

config = context.config

if config.config_file_name is not None:
    # Keep loggers the host application configured.
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: pass -x url=... or set sqlalchemy.url")
    return url


def _run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; autogenerate must emit batch operations.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_offline() -> None:
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_migrations(connection)
    else:
        asyncio.run(run_locked(_url(), _run_migrations))


if context.is_offline_mode():
    _run_offline()
else:
    _run_online()
