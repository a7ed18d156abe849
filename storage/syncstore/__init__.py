"""syncstore: durable state of the sync server behind one small interface.

``Store`` and ``PushSession`` (``store.py``) are the contract; ``SqlStore``
(SQLite, PostgreSQL), ``MemoryStore`` and the test double ``FaultyStore`` keep
it. ``open_store(url)`` picks a backend by URL scheme. Run the migrations with
``syncstore.migrate.upgrade(url)`` before opening a SQL store.

Imports no other project package.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy.exc

from syncstore.adminstore import (
    AdminStore,
    AuditRecord,
    ConflictOverride,
    ConflictQuery,
    DeadLetterKey,
    DeadLetterQuery,
)
from syncstore.attachments import AttachmentRecord, AttachmentRefRecord, AttachmentState, AttachmentStore
from syncstore.channels import ChannelStore, EvictionRecord, ScopedEntity, ScopedPage
from syncstore.faulty import FaultyStore, InjectedFault
from syncstore.integrity import IntegrityStore
from syncstore.keystore import SEALED_TABLES, KeyStore, Resealed, SealedRow, SealedTable
from syncstore.memory import MemoryStore
from syncstore.memory_attachments import MemoryAttachmentStore
from syncstore.records import (
    ChangeRecord,
    CheckpointRecord,
    ConflictFilter,
    ConflictRecord,
    DeadLetterRecord,
    DotRecord,
    EntityRecord,
    MembershipRecord,
    PushBatch,
    ReplicaRecord,
    TenantRecord,
    VerificationRecord,
    WrappedKey,
)
from syncstore.sql import SqlStore
from syncstore.sql_attachments import SqlAttachmentStore
from syncstore.store import (
    EntityKey,
    PushLoad,
    PushSession,
    Store,
    StoreUnavailable,
    TenantExists,
    TenantNotFound,
)

MEMORY_URL = "memory://"

_SQL_SCHEMES = ("sqlite+aiosqlite://", "postgresql+psycopg://")


TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    StoreUnavailable,
    sqlalchemy.exc.TimeoutError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
)
"""Failures that mean "the database cannot serve right now" (down, unreachable,
pool exhausted, SQLite locked past its busy timeout). Servers answer them with
503 and ``Retry-After`` rather than 500."""


def open_store(url: str, **engine_kwargs: Any) -> Store:
    """The backend for ``url``; does not connect and does not migrate.

    ``memory://`` gives a ``MemoryStore``; ``sqlite+aiosqlite:///path`` and
    ``postgresql+psycopg://...`` give a ``SqlStore`` (``engine_kwargs`` go to its
    engine). Anything else raises ``ValueError``.
    """
    if url == MEMORY_URL:
        return MemoryStore()
    if url.startswith(_SQL_SCHEMES):
        return SqlStore.from_url(url, **engine_kwargs)
    scheme = url.split("://", 1)[0] if "://" in url else url
    raise ValueError(
        f"unsupported store URL scheme {scheme!r}: use memory://, sqlite+aiosqlite:///path "
        "or postgresql+psycopg://user@host/db"
    )


def attachment_store_for(store: Store) -> AttachmentStore:
    """The ``AttachmentStore`` that keeps its rows in the same database as ``store``."""
    inner = store.inner if isinstance(store, FaultyStore) else store
    if isinstance(inner, SqlStore):
        return SqlAttachmentStore(inner.database)
    if isinstance(inner, MemoryStore):
        return MemoryAttachmentStore()
    raise TypeError(f"no attachment store for {type(inner).__name__}")


__all__ = [
    "MEMORY_URL",
    "SEALED_TABLES",
    "TRANSIENT_ERRORS",
    "AdminStore",
    "AttachmentRecord",
    "AttachmentRefRecord",
    "AttachmentState",
    "AttachmentStore",
    "AuditRecord",
    "ChangeRecord",
    "ChannelStore",
    "CheckpointRecord",
    "ConflictFilter",
    "ConflictOverride",
    "ConflictQuery",
    "ConflictRecord",
    "DeadLetterKey",
    "DeadLetterQuery",
    "DeadLetterRecord",
    "DotRecord",
    "EntityKey",
    "EntityRecord",
    "EvictionRecord",
    "FaultyStore",
    "InjectedFault",
    "IntegrityStore",
    "KeyStore",
    "MembershipRecord",
    "MemoryAttachmentStore",
    "MemoryStore",
    "PushBatch",
    "PushLoad",
    "PushSession",
    "ReplicaRecord",
    "Resealed",
    "ScopedEntity",
    "ScopedPage",
    "SealedRow",
    "SealedTable",
    "SqlAttachmentStore",
    "SqlStore",
    "Store",
    "StoreUnavailable",
    "TenantExists",
    "TenantNotFound",
    "TenantRecord",
    "VerificationRecord",
    "WrappedKey",
    "attachment_store_for",
    "open_store",
]
