"""``MemoryIntegrity``: the ``IntegrityStore`` part of ``MemoryStore``."""

from __future__ import annotations

from collections.abc import Sequence

from syncstore.integrity import EntityKey
from syncstore.memory_state import MemoryState
from syncstore.records import CheckpointRecord, VerificationRecord


class MemoryIntegrity:
    def __init__(self, state: MemoryState) -> None:
        self._state = state

    async def member_channels(self, tenant_id: str, keys: Sequence[EntityKey]) -> dict[EntityKey, set[str]]:
        tenant = self._state.tenants.get(tenant_id)
        if tenant is None:
            return {}
        found: dict[EntityKey, set[str]] = {}
        for key in keys:
            members = {c for c, m in tenant.channels.get(key, {}).items() if m.member}
            if members:
                found[key] = members
        return found

    async def checkpoints(self, tenant_id: str, after_seq: int, limit: int) -> list[CheckpointRecord]:
        tenant = self._state.tenants.get(tenant_id)
        if tenant is None or limit <= 0:
            return []
        return [c for seq, c in sorted(tenant.checkpoints.items()) if seq > after_seq][:limit]

    async def purged(self, tenant_id: str, collection: str, entity_id: str) -> tuple[int, int]:
        tenant = self._state.tenants.get(tenant_id)
        if tenant is None:
            return 0, 0
        return tenant.purges.get((collection, entity_id), 0), 0  # a memory store has no rows from before 0013

    async def record_verification(self, tenant_id: str, record: VerificationRecord) -> None:
        self._state.require(tenant_id).verifications.append(record)

    async def verifications(self, tenant_id: str, limit: int) -> list[VerificationRecord]:
        tenant = self._state.tenants.get(tenant_id)
        if tenant is None:
            return []
        return sorted(tenant.verifications, key=lambda v: v.started_at, reverse=True)[:limit]
