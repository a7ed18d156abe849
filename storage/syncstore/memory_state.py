"""``MemoryState``: what every part of ``MemoryStore`` shares: the tenants' rows and the tenant locks.

``MemoryStore`` builds one and hands it to each of its parts (``MemoryKeys``,
``MemoryAdmin``, ``MemoryChannels``) in their constructors; nothing else is shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from msgspec.structs import replace

from syncstore.adminstore import AuditRecord, ConflictOverride
from syncstore.locks import TenantLocks
from syncstore.records import (
    ChangeRecord,
    CheckpointRecord,
    ConflictRecord,
    DeadLetterRecord,
    EntityRecord,
    MembershipRecord,
    ReplicaRecord,
    TenantRecord,
    VerificationRecord,
    WrappedKey,
)
from syncstore.store import EntityKey, TenantNotFound

Dot = tuple[str, int]


@dataclass
class TenantRows:
    """One tenant's rows, keyed as the SQL tables' primary keys."""

    record: TenantRecord
    keys: list[WrappedKey]
    replicas: dict[str, ReplicaRecord] = field(default_factory=dict)
    entities: dict[EntityKey, EntityRecord] = field(default_factory=dict)
    changes: dict[int, ChangeRecord] = field(default_factory=dict)
    change_ids: dict[Dot, str] = field(default_factory=dict)
    conflicts: dict[tuple[int, int], ConflictRecord] = field(default_factory=dict)
    dead_letters: dict[Dot, DeadLetterRecord] = field(default_factory=dict)
    channels: dict[EntityKey, dict[str, MembershipRecord]] = field(default_factory=dict)
    checkpoints: dict[int, CheckpointRecord] = field(default_factory=dict)
    purges: dict[EntityKey, int] = field(default_factory=dict)
    """Each purged entity's latest purged tombstone seq (``entity_purges``)."""
    latest: dict[EntityKey, int] = field(default_factory=dict)
    """Each entity's latest change seq in ``changes`` (what SQL reads from its index)."""
    verifications: list[VerificationRecord] = field(default_factory=list)


@dataclass
class MemoryState:
    """All rows of a ``MemoryStore``; the per-tenant lock guards a tenant's rows during a push."""

    tenants: dict[str, TenantRows] = field(default_factory=dict)
    locks: TenantLocks = field(default_factory=TenantLocks)
    overrides: dict[tuple[str, int, int], ConflictOverride] = field(default_factory=dict)
    """Conflict overrides keyed ``(tenant, seq, idx)``."""
    audit: list[AuditRecord] = field(default_factory=list)

    def require(self, tenant_id: str) -> TenantRows:
        """The tenant's rows; raises ``TenantNotFound``."""
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            raise TenantNotFound(tenant_id)
        return tenant


def as_read(tenant: TenantRows, record: EntityRecord) -> EntityRecord:
    """The row as a read returns it: with ``latest_seq`` from the change log, as the SQL reads do."""
    return replace(record, latest_seq=tenant.latest.get((record.collection, record.entity_id)))
