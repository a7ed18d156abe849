"""``FaultyAccessMixin`` and ``FaultyKeysMixin``: ``FaultyStore`` passes these calls to its inner store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from syncstore.channels import AccessStore, EvictionRecord, ScopedEntity
from syncstore.keystore import KeyPart, KeyStore, Resealed, SealedRow, SealedTable
from syncstore.records import ChangeRecord, ConflictFilter, ConflictRecord, WrappedKey

if TYPE_CHECKING:
    from syncstore.store import Store


class FaultyAccessMixin:
    """Mixed into ``FaultyStore``; the inner store must also be an ``AccessStore``."""

    if TYPE_CHECKING:
        inner: Store

    @property
    def _inner_access(self) -> AccessStore:
        if not isinstance(self.inner, AccessStore):
            raise TypeError(f"{type(self.inner).__name__} is not an AccessStore")
        return self.inner

    async def pull_in_channels(
        self,
        tenant_id: str,
        channels: Sequence[str],
        after_seq: int,
        limit: int,
        collections: Sequence[str] | None = None,
    ) -> list[ScopedEntity]:
        return await self._inner_access.pull_in_channels(tenant_id, channels, after_seq, limit, collections)

    async def evictions(
        self,
        tenant_id: str,
        channels: Sequence[str],
        after_seq: int,
        limit: int,
        collections: Sequence[str] | None = None,
    ) -> list[EvictionRecord]:
        return await self._inner_access.evictions(tenant_id, channels, after_seq, limit, collections)

    async def entity_channels(self, tenant_id: str, collection: str, entity_id: str) -> dict[str, int]:
        return await self._inner_access.entity_channels(tenant_id, collection, entity_id)

    async def conflicts_in_channels(
        self,
        tenant_id: str,
        channels: Sequence[str],
        after: tuple[int, int] | None,
        limit: int,
        filters: ConflictFilter | None = None,
    ) -> list[ConflictRecord]:
        return await self._inner_access.conflicts_in_channels(tenant_id, channels, after, limit, filters)

    async def set_entity_channels(
        self, tenant_id: str, collection: str, entity_id: str, expected_seq: int, channels: Sequence[str]
    ) -> bool:
        return await self._inner_access.set_entity_channels(tenant_id, collection, entity_id, expected_seq, channels)


class FaultyKeysMixin:
    """Mixed into ``FaultyStore``; the inner store must also be a ``KeyStore``."""

    if TYPE_CHECKING:
        inner: Store

    @property
    def _inner_keys(self) -> KeyStore:
        if not isinstance(self.inner, KeyStore):
            raise TypeError(f"{type(self.inner).__name__} is not a KeyStore")
        return self.inner

    async def add_tenant_key(self, key: WrappedKey) -> None:
        await self._inner_keys.add_tenant_key(key)

    async def rewrap_tenant_key(self, key: WrappedKey, wrapped: bytes, master_key_id: str) -> bool:
        return await self._inner_keys.rewrap_tenant_key(key, wrapped, master_key_id)

    async def destroy_tenant_keys(self, tenant_id: str, versions: Sequence[int] | None = None) -> int:
        return await self._inner_keys.destroy_tenant_keys(tenant_id, versions)

    async def key_usage(self, tenant_id: str) -> dict[str, dict[int, int]]:
        return await self._inner_keys.key_usage(tenant_id)

    async def sealed_rows(
        self, tenant_id: str, table: SealedTable, *, not_version: int, after: tuple[KeyPart, ...] | None, limit: int
    ) -> list[SealedRow]:
        return await self._inner_keys.sealed_rows(tenant_id, table, not_version=not_version, after=after, limit=limit)

    async def reseal(self, tenant_id: str, table: SealedTable, rows: Sequence[Resealed]) -> int:
        return await self._inner_keys.reseal(tenant_id, table, rows)

    async def erase_tenant(self, tenant_id: str) -> dict[str, int]:
        return await self._inner_keys.erase_tenant(tenant_id)

    async def changes_by_user(self, tenant_id: str, user: str, after_seq: int, limit: int) -> list[ChangeRecord]:
        return await self._inner_keys.changes_by_user(tenant_id, user, after_seq, limit)
