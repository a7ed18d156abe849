"""The Store interface: durable state of the sync server, one tenant at a time.

The merge semantics live above this interface (``syncserver``); a backend only
persists rows and keeps two promises:

* **Per-tenant serial writes.** ``push_session(tenant)`` holds an exclusive
  per-tenant lock (a row lock on ``tenants`` in PostgreSQL, ``BEGIN IMMEDIATE``
  in SQLite, an ``asyncio.Lock`` in memory) from entry until exit. Two server
  processes pushing to one tenant therefore take turns.
* **Gap-free, in-order sequence numbers.** Inside a session, seqs
  ``last_seq + 1 ...`` are the caller's to assign. ``commit`` writes the batch and
  the new ``last_seq`` in one transaction. Because the lock is held until commit,
  no reader can see seq N+1 before seq N is committed, and a rolled back session
  leaves no gap.

Usage::

    async with store.push_session("acme") as session:
        loaded = await session.load(["phone-7f3a"], [("deliveries", "dlv-123")])  # replicas, rows, channels
        ...  # merge, encrypt, number from session.last_seq + 1
        await session.commit(batch)
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from msgspec import Struct

from syncstore.records import (
    ChangeRecord,
    ConflictFilter,
    ConflictRecord,
    DeadLetterRecord,
    DotRecord,
    EntityRecord,
    PushBatch,
    ReplicaRecord,
    TenantRecord,
    WrappedKey,
)

EntityKey = tuple[str, str]
"""(collection, entity_id)"""


class TenantExists(Exception):
    """``create_tenant`` was called for an id that already exists."""


class TenantNotFound(Exception):
    """The tenant does not exist."""


class StoreUnavailable(Exception):
    """The backend cannot be reached (database down, file unwritable)."""


class PushLoad(Struct, frozen=True, gc=False):
    """What ``PushSession.load`` read: ``replicas``, ``entities`` and ``channel_members`` of those found."""

    replicas: dict[str, ReplicaRecord]
    entities: dict[EntityKey, EntityRecord]
    members: dict[EntityKey, dict[str, int]]


class PushSession(Protocol):
    """One locked, atomic write to one tenant. Nothing is written before ``commit``."""

    last_seq: int
    """The tenant's highest committed seq when the lock was taken."""
    chain_head: bytes | None
    """The change log's hash-chain link at ``last_seq`` (None before the tenant's first chained change)."""

    async def replicas(self, replica_ids: Sequence[str]) -> dict[str, ReplicaRecord]:
        """High-water marks of the given replicas; unknown ones are absent."""
        ...

    async def entities(self, keys: Sequence[EntityKey]) -> dict[EntityKey, EntityRecord]:
        """Current rows of the given entities, including deleted ones; unknown ones are absent."""
        ...

    async def dot(self, replica_id: str, n: int) -> DotRecord | None:
        """What ``(replica, n)`` was used for: the change id recorded in the change log, or in the dead letters
        with the refusal's code and message.

        Used to answer a replayed change as it was answered first (``duplicate``, or its ``rejected`` again), and
        to tell a replay from a client that reused a counter.
        """
        ...

    async def dot_change_id(self, replica_id: str, n: int) -> str | None:
        """The change id of ``dot(replica_id, n)``."""
        ...

    async def channel_members(self, keys: Sequence[EntityKey]) -> dict[EntityKey, dict[str, int]]:
        """The channels each entity is a member of now, each with the seq it joined at.

        Entities in no channel are absent. Rows of channels an entity left are not returned.
        """
        ...

    async def load(self, replica_ids: Sequence[str], keys: Sequence[EntityKey]) -> PushLoad:
        """``replicas(replica_ids)``, ``entities(keys)`` and ``channel_members`` of the entities found, together.

        What a push reads before it merges, in one step (on SQLite one hop to the writer thread instead of
        three). Equal to the three calls made one after another.
        """
        ...

    async def commit(self, batch: PushBatch) -> None:
        """Write everything in ``batch`` and set the tenant's ``last_seq``, atomically.

        Entities are upserted by key, replicas by id, channel rows by
        ``(collection, entity_id, channel)``; changes, conflicts and dead letters
        are inserted. Calling it twice is an error.
        """
        ...


class Store(Protocol):
    """Durable storage. Every method is scoped to one tenant; no call crosses tenants."""

    async def close(self) -> None:
        """Release connections. The store is unusable afterwards."""
        ...

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless a trivial query succeeds."""
        ...

    async def create_tenant(self, tenant_id: str, first_key: WrappedKey, now_ms: int) -> None:
        """Create a tenant with its first data key. Raises ``TenantExists``."""
        ...

    async def get_tenant(self, tenant_id: str) -> TenantRecord | None: ...

    async def list_tenants(self) -> list[TenantRecord]: ...

    async def tenant_keys(self, tenant_id: str) -> list[WrappedKey]:
        """All data-key versions of a tenant, oldest first."""
        ...

    def push_session(self, tenant_id: str) -> AbstractAsyncContextManager[PushSession]:
        """Lock the tenant for one atomic write (see module docs). Raises ``TenantNotFound``."""
        ...

    async def pull(
        self, tenant_id: str, after_seq: int, limit: int, collections: Sequence[str] | None = None
    ) -> list[EntityRecord]:
        """Entities whose ``seq > after_seq``, in ``seq`` order, at most ``limit``."""
        ...

    async def get_entity(self, tenant_id: str, collection: str, entity_id: str) -> EntityRecord | None: ...

    async def changes(
        self,
        tenant_id: str,
        after_seq: int,
        limit: int,
        *,
        collection: str | None = None,
        entity_id: str | None = None,
    ) -> list[ChangeRecord]:
        """The change log after ``after_seq`` in seq order, optionally for one entity."""
        ...

    async def conflicts(
        self,
        tenant_id: str,
        after: tuple[int, int] | None,
        limit: int,
        filters: ConflictFilter | None = None,
    ) -> list[ConflictRecord]:
        """Conflicts ordered by ``(seq, idx)``, strictly after ``after``."""
        ...

    async def get_conflict(self, tenant_id: str, seq: int, idx: int) -> ConflictRecord | None: ...

    async def dead_letters(self, tenant_id: str, limit: int, status: str | None = None) -> list[DeadLetterRecord]:
        """Dead letters, newest first."""
        ...

    async def purge_tombstones(self, tenant_id: str, updated_before_ms: int) -> int:
        """Delete entities deleted before the given time; raise ``purged_seq`` to cover them.

        Returns how many entities were removed. Takes the tenant lock.
        """
        ...
