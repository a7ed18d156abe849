"""``FaultyAdminMixin``: ``FaultyStore`` passes every ``AdminStore`` call to its inner store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncstore.adminstore import (
    AdminStore,
    AuditRecord,
    ConflictOverride,
    ConflictQuery,
    DeadLetterKey,
    DeadLetterQuery,
)
from syncstore.records import ChangeRecord, ConflictRecord, DeadLetterRecord, ReplicaRecord

if TYPE_CHECKING:
    from syncstore.store import Store


class FaultyAdminMixin:
    """Mixed into ``FaultyStore``; the inner store must also be an ``AdminStore``."""

    if TYPE_CHECKING:
        inner: Store

    @property
    def _inner_admin(self) -> AdminStore:
        inner = self.inner
        if not isinstance(inner, AdminStore):
            raise TypeError(f"{type(inner).__name__} is not an AdminStore")
        return inner

    async def find_conflicts(
        self, tenant_id: str, after: tuple[int, int] | None, limit: int, query: ConflictQuery
    ) -> list[ConflictRecord]:
        return await self._inner_admin.find_conflicts(tenant_id, after, limit, query)

    async def record_override(self, tenant_id: str, override: ConflictOverride) -> bool:
        return await self._inner_admin.record_override(tenant_id, override)

    async def conflict_override(self, tenant_id: str, seq: int, idx: int) -> ConflictOverride | None:
        return await self._inner_admin.conflict_override(tenant_id, seq, idx)

    async def find_dead_letters(
        self, tenant_id: str, before: DeadLetterKey | None, limit: int, query: DeadLetterQuery
    ) -> list[DeadLetterRecord]:
        return await self._inner_admin.find_dead_letters(tenant_id, before, limit, query)

    async def get_dead_letter(self, tenant_id: str, replica_id: str, n: int) -> DeadLetterRecord | None:
        return await self._inner_admin.get_dead_letter(tenant_id, replica_id, n)

    async def set_dead_letter_status(self, tenant_id: str, replica_id: str, n: int, expected: str, status: str) -> bool:
        return await self._inner_admin.set_dead_letter_status(tenant_id, replica_id, n, expected, status)

    async def change_at(self, tenant_id: str, replica_id: str, n: int) -> ChangeRecord | None:
        return await self._inner_admin.change_at(tenant_id, replica_id, n)

    async def get_replica(self, tenant_id: str, replica_id: str) -> ReplicaRecord | None:
        return await self._inner_admin.get_replica(tenant_id, replica_id)

    async def append_audit(self, entry: AuditRecord) -> int:
        return await self._inner_admin.append_audit(entry)

    async def audit_log(
        self, tenant_id: str | None, before_id: int | None, limit: int, target: str | None = None
    ) -> list[AuditRecord]:
        return await self._inner_admin.audit_log(tenant_id, before_id, limit, target)
