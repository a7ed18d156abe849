"""``FaultyStore``: a Store wrapper that fails on command, for tests.

Usage::

    store = FaultyStore(MemoryStore())
    store.fail_next_commit()                  # nothing is written, commit raises
    store.fail_next_commit(after_write=True)  # written, but the caller sees an error

The second form is the lost acknowledgement: the push is durable but the
server never learned it, so the client retries and must be told "duplicate".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING

from syncstore.faulty_admin import FaultyAdminMixin
from syncstore.faulty_channels import FaultyAccessMixin, FaultyKeysMixin
from syncstore.records import (
    ChangeRecord,
    ConflictFilter,
    ConflictRecord,
    DeadLetterRecord,
    EntityRecord,
    PushBatch,
    ReplicaRecord,
    TenantRecord,
    WrappedKey,
)
from syncstore.store import EntityKey, PushSession, Store, StoreUnavailable


class InjectedFault(StoreUnavailable):
    """The default error a ``FaultyStore`` raises: looks like an outage to callers."""


class FaultyStore(FaultyAdminMixin, FaultyAccessMixin, FaultyKeysMixin):
    """Delegates to ``inner``; ``commit`` raises once per ``fail_next_commit`` call."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self._armed: list[tuple[BaseException, bool]] = []
        self._ping_failure: BaseException | None = None

    def fail_next_ping(self, error: BaseException | None = None) -> None:
        """Make the next ``ping`` raise ``error`` (default ``InjectedFault``), as a database that is down does."""
        self._ping_failure = error or InjectedFault("injected ping failure")

    def fail_next_commit(self, error: BaseException | None = None, *, after_write: bool = False) -> None:
        """Make the next ``commit`` raise ``error`` (default ``InjectedFault``).

        With ``after_write`` the batch is committed first, then the error raised.
        Calls queue up: two calls fail the next two commits.
        """
        self._armed.append((error or InjectedFault("injected commit failure"), after_write))

    def push_session(self, tenant_id: str) -> AbstractAsyncContextManager[PushSession]:
        return self._push_session(tenant_id)

    @asynccontextmanager
    async def _push_session(self, tenant_id: str) -> AsyncIterator[PushSession]:
        async with self.inner.push_session(tenant_id) as session:
            yield _FaultySession(session, self._armed)

    async def close(self) -> None:
        await self.inner.close()

    async def ping(self) -> None:
        failure, self._ping_failure = self._ping_failure, None
        if failure is not None:
            raise failure
        await self.inner.ping()

    async def create_tenant(self, tenant_id: str, first_key: WrappedKey, now_ms: int) -> None:
        await self.inner.create_tenant(tenant_id, first_key, now_ms)

    async def get_tenant(self, tenant_id: str) -> TenantRecord | None:
        return await self.inner.get_tenant(tenant_id)

    async def list_tenants(self) -> list[TenantRecord]:
        return await self.inner.list_tenants()

    async def tenant_keys(self, tenant_id: str) -> list[WrappedKey]:
        return await self.inner.tenant_keys(tenant_id)

    async def pull(
        self, tenant_id: str, after_seq: int, limit: int, collections: Sequence[str] | None = None
    ) -> list[EntityRecord]:
        return await self.inner.pull(tenant_id, after_seq, limit, collections)

    async def get_entity(self, tenant_id: str, collection: str, entity_id: str) -> EntityRecord | None:
        return await self.inner.get_entity(tenant_id, collection, entity_id)

    async def changes(
        self,
        tenant_id: str,
        after_seq: int,
        limit: int,
        *,
        collection: str | None = None,
        entity_id: str | None = None,
    ) -> list[ChangeRecord]:
        return await self.inner.changes(tenant_id, after_seq, limit, collection=collection, entity_id=entity_id)

    async def conflicts(
        self,
        tenant_id: str,
        after: tuple[int, int] | None,
        limit: int,
        filters: ConflictFilter | None = None,
    ) -> list[ConflictRecord]:
        return await self.inner.conflicts(tenant_id, after, limit, filters)

    async def get_conflict(self, tenant_id: str, seq: int, idx: int) -> ConflictRecord | None:
        return await self.inner.get_conflict(tenant_id, seq, idx)

    async def dead_letters(self, tenant_id: str, limit: int, status: str | None = None) -> list[DeadLetterRecord]:
        return await self.inner.dead_letters(tenant_id, limit, status)

    async def purge_tombstones(self, tenant_id: str, updated_before_ms: int) -> int:
        return await self.inner.purge_tombstones(tenant_id, updated_before_ms)


class _FaultySession:
    def __init__(self, inner: PushSession, armed: list[tuple[BaseException, bool]]) -> None:
        self._inner = inner
        self._armed = armed

    @property
    def last_seq(self) -> int:
        return self._inner.last_seq

    @last_seq.setter
    def last_seq(self, value: int) -> None:
        self._inner.last_seq = value

    async def replicas(self, replica_ids: Sequence[str]) -> dict[str, ReplicaRecord]:
        return await self._inner.replicas(replica_ids)

    async def entities(self, keys: Sequence[EntityKey]) -> dict[EntityKey, EntityRecord]:
        return await self._inner.entities(keys)

    async def dot_change_id(self, replica_id: str, n: int) -> str | None:
        return await self._inner.dot_change_id(replica_id, n)

    async def channel_members(self, keys: Sequence[EntityKey]) -> dict[EntityKey, dict[str, int]]:
        return await self._inner.channel_members(keys)

    async def commit(self, batch: PushBatch) -> None:
        if not self._armed:
            await self._inner.commit(batch)
            return
        error, after_write = self._armed.pop(0)
        if after_write:
            await self._inner.commit(batch)
        raise error


if TYPE_CHECKING:

    def _conforms(store: FaultyStore) -> Store:
        return store
