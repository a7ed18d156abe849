"""The ``IntegrityStore`` interface: what checking the change log's hash chain needs from storage.

The chain itself is written by pushes (``ChangeRecord.chain``, ``PushBatch.chain_head``
and ``PushBatch.checkpoints``) under the tenant lock, and every read of an entity
row carries what the log says of it (``EntityRecord.latest_seq``); these reads
serve ``syncserver verify``. ``SqlStore`` and ``MemoryStore``
implement it through their parts ``SqlIntegrity`` and ``MemoryIntegrity``;
``FaultyStore`` forwards it.

Usage::

    members = await store.member_channels("acme", [("deliveries", "dlv-1")])
    # {("deliveries", "dlv-1"): {"driver:17", "depot:dxb"}}
    marks = await store.checkpoints("acme", after_seq=0, limit=100)
    await store.record_verification("acme", VerificationRecord(...))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from syncstore.records import CheckpointRecord, VerificationRecord

EntityKey = tuple[str, str]


@runtime_checkable
class IntegrityStore(Protocol):
    async def member_channels(self, tenant_id: str, keys: Sequence[EntityKey]) -> dict[EntityKey, set[str]]:
        """The channels each entity's channel rows make it a member of now; entities in none are absent."""
        ...

    async def checkpoints(self, tenant_id: str, after_seq: int, limit: int) -> list[CheckpointRecord]:
        """Signed chain checkpoints with ``seq > after_seq``, in seq order."""
        ...

    async def purged(self, tenant_id: str, collection: str, entity_id: str) -> tuple[int, int]:
        """Where the entity's current life may start: the seq of its latest tombstone ``purge_tombstones``
        deleted (0 if none), and the seq up to which the tenant's purges were not recorded (0 if every purge
        was: purges before migration ``0013_entity_purges`` left only the tenant's ``purged_seq``)."""
        ...

    async def record_verification(self, tenant_id: str, record: VerificationRecord) -> None:
        """Keep the outcome of one verification run."""
        ...

    async def verifications(self, tenant_id: str, limit: int) -> list[VerificationRecord]:
        """The latest verification runs, newest first."""
        ...
