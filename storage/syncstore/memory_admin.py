"""``MemoryAdmin``: the ``AdminStore`` part of ``MemoryStore`` (see ``adminstore.py``).

Works on the store's per-tenant rows; overrides and the audit log are in the
shared ``MemoryState`` too.
"""

from __future__ import annotations

from typing import Any

from msgspec.structs import replace

from syncstore.adminstore import (
    AuditRecord,
    ConflictOverride,
    ConflictQuery,
    DeadLetterKey,
    DeadLetterQuery,
)
from syncstore.memory_state import MemoryState
from syncstore.records import ChangeRecord, ConflictRecord, DeadLetterRecord, ReplicaRecord


class MemoryAdmin:
    """The ``AdminStore`` part of ``MemoryStore``, over the store's shared ``MemoryState``."""

    def __init__(self, state: MemoryState) -> None:
        self._state = state

    async def find_conflicts(
        self, tenant_id: str, after: tuple[int, int] | None, limit: int, query: ConflictQuery
    ) -> list[ConflictRecord]:
        tenant = self._state.tenants.get(tenant_id)
        if tenant is None or limit <= 0:
            return []
        found = [
            c
            for key, c in sorted(tenant.conflicts.items())
            if (after is None or key > after) and _conflict_matches(c, query)
        ]
        return found[:limit]

    async def record_override(self, tenant_id: str, override: ConflictOverride) -> bool:
        tenant = self._state.tenants.get(tenant_id)
        key = (override.seq, override.idx)
        if tenant is None or key not in tenant.conflicts:
            return False
        tenant.conflicts[key] = replace(tenant.conflicts[key], status="overridden")
        self._state.overrides[(tenant_id, *key)] = override
        return True

    async def conflict_override(self, tenant_id: str, seq: int, idx: int) -> ConflictOverride | None:
        return self._state.overrides.get((tenant_id, seq, idx))

    async def find_dead_letters(
        self, tenant_id: str, before: DeadLetterKey | None, limit: int, query: DeadLetterQuery
    ) -> list[DeadLetterRecord]:
        tenant = self._state.tenants.get(tenant_id)
        if tenant is None or limit <= 0:
            return []
        found = [
            d
            for d in tenant.dead_letters.values()
            if (before is None or _letter_key(d) < before) and _letter_matches(d, query)
        ]
        found.sort(key=_letter_key, reverse=True)
        return found[:limit]

    async def get_dead_letter(self, tenant_id: str, replica_id: str, n: int) -> DeadLetterRecord | None:
        tenant = self._state.tenants.get(tenant_id)
        return tenant.dead_letters.get((replica_id, n)) if tenant else None

    async def set_dead_letter_status(
        self, tenant_id: str, replica_id: str, n: int, expected: str, status: str, audit: AuditRecord | None = None
    ) -> bool:
        # No await from the check to the writes: atomic in the event loop, like the SQL transaction.
        tenant = self._state.tenants.get(tenant_id)
        letter = tenant.dead_letters.get((replica_id, n)) if tenant else None
        if tenant is None or letter is None or letter.status != expected:
            return False
        tenant.dead_letters[(replica_id, n)] = replace(letter, status=status)
        if audit is not None:
            self._append(audit)
        return True

    async def change_at(self, tenant_id: str, replica_id: str, n: int) -> ChangeRecord | None:
        tenant = self._state.tenants.get(tenant_id)
        if tenant is None or (replica_id, n) not in tenant.change_ids:
            return None
        return next(c for c in tenant.changes.values() if c.replica_id == replica_id and c.n == n)

    async def get_replica(self, tenant_id: str, replica_id: str) -> ReplicaRecord | None:
        tenant = self._state.tenants.get(tenant_id)
        return tenant.replicas.get(replica_id) if tenant else None

    async def append_audit(self, entry: AuditRecord) -> int:
        return self._append(entry)

    def _append(self, entry: AuditRecord) -> int:
        log = self._state.audit
        new_id = len(log) + 1
        log.append(replace(entry, id=new_id))
        return new_id

    async def audit_log(
        self, tenant_id: str | None, before_id: int | None, limit: int, target: str | None = None
    ) -> list[AuditRecord]:
        if limit <= 0:
            return []
        found = [
            e
            for e in reversed(self._state.audit)
            if e.tenant_id == tenant_id
            and (before_id is None or e.id < before_id)
            and (target is None or e.target == target)
        ]
        return found[:limit]


def _letter_key(letter: DeadLetterRecord) -> DeadLetterKey:
    return (letter.created_at, letter.replica_id, letter.n)


def _in_range(at: int, since_ms: int | None, until_ms: int | None) -> bool:
    return (since_ms is None or at >= since_ms) and (until_ms is None or at < until_ms)


def _equal(record: Any, pairs: tuple[tuple[str, str | None], ...]) -> bool:
    return all(expected is None or getattr(record, name) == expected for name, expected in pairs)


def _conflict_matches(c: ConflictRecord, q: ConflictQuery) -> bool:
    pairs = (
        ("collection", q.collection),
        ("entity_id", q.entity_id),
        ("field", q.field),
        ("kind", q.kind),
        ("status", q.status),
    )
    return _equal(c, pairs) and _in_range(c.created_at, q.since_ms, q.until_ms)


def _letter_matches(d: DeadLetterRecord, q: DeadLetterQuery) -> bool:
    pairs = (
        ("status", q.status),
        ("code", q.code),
        ("replica_id", q.replica_id),
        ("user", q.user),
        ("collection", q.collection),
        ("entity_id", q.entity_id),
    )
    return _equal(d, pairs) and _in_range(d.created_at, q.since_ms, q.until_ms)
