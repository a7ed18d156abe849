"""``MemoryStore``: the Store in dicts, the reference backend for tests.

Same contract as ``SqlStore`` (the contract suite runs against both): the
tenant lock is an ``asyncio.Lock`` held for the whole session, ``commit``
checks the batch completely before it changes anything, and a session that
exits without committing leaves no trace. Nothing survives the process.

Records are frozen structs, so handing out the stored objects is safe.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from msgspec.structs import replace

from syncstore.batches import check_batch
from syncstore.facets import via
from syncstore.memory_admin import MemoryAdmin
from syncstore.memory_channels import MemoryChannels, purge_channel_rows
from syncstore.memory_integrity import MemoryIntegrity
from syncstore.memory_keys import MemoryKeys
from syncstore.memory_state import MemoryState, TenantRows, as_read
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
from syncstore.store import EntityKey, PushLoad, PushSession, TenantExists


class MemoryPushSession:
    """See ``PushSession``."""

    def __init__(self, tenant: TenantRows) -> None:
        self._tenant = tenant
        self.last_seq = tenant.record.last_seq
        self.chain_head = tenant.record.chain_head
        self._finished = False

    async def replicas(self, replica_ids: Sequence[str]) -> dict[str, ReplicaRecord]:
        self._check_open()
        known = self._tenant.replicas
        return {rid: known[rid] for rid in replica_ids if rid in known}

    async def entities(self, keys: Sequence[EntityKey]) -> dict[EntityKey, EntityRecord]:
        self._check_open()
        known = self._tenant.entities
        return {key: as_read(self._tenant, known[key]) for key in keys if key in known}

    async def dot(self, replica_id: str, n: int) -> DotRecord | None:
        self._check_open()
        dot = (replica_id, n)
        if dot in self._tenant.change_ids:
            return DotRecord(self._tenant.change_ids[dot])
        letter = self._tenant.dead_letters.get(dot)
        return DotRecord(letter.change_id, letter.code, letter.message) if letter else None

    async def dot_change_id(self, replica_id: str, n: int) -> str | None:
        found = await self.dot(replica_id, n)
        return None if found is None else found.change_id

    async def channel_members(self, keys: Sequence[EntityKey]) -> dict[EntityKey, dict[str, int]]:
        self._check_open()
        found: dict[EntityKey, dict[str, int]] = {}
        for key in keys:
            members = {c: m.joined_seq for c, m in self._tenant.channels.get(key, {}).items() if m.member}
            if members:
                found[key] = members
        return found

    async def load(self, replica_ids: Sequence[str], keys: Sequence[EntityKey]) -> PushLoad:
        found = await self.entities(keys)
        return PushLoad(await self.replicas(replica_ids), found, await self.channel_members(list(found)))

    async def commit(self, batch: PushBatch) -> None:
        """Check ``batch`` against the rules and the stored rows, then apply it all at once."""
        self._check_open()
        check_batch(self.last_seq, batch)
        self._check_collisions(batch)
        self._finished = True
        tenant = self._tenant
        for change in batch.changes:
            tenant.changes[change.seq] = change
            tenant.change_ids[(change.replica_id, change.n)] = change.change_id
            key = (change.collection, change.entity_id)
            tenant.latest[key] = max(tenant.latest.get(key, 0), change.seq)
        tenant.conflicts.update({(c.seq, c.idx): c for c in batch.conflicts})
        tenant.dead_letters.update({(d.replica_id, d.n): d for d in batch.dead_letters})
        tenant.entities.update({(e.collection, e.entity_id): replace(e, latest_seq=None) for e in batch.entities})
        tenant.replicas.update({r.replica_id: r for r in batch.replicas})
        for m in batch.memberships:
            tenant.channels.setdefault((m.collection, m.entity_id), {})[m.channel] = m
        tenant.checkpoints.update({c.seq: c for c in batch.checkpoints})
        head = batch.chain_head if batch.chain_head is not None else tenant.record.chain_head
        tenant.record = replace(tenant.record, last_seq=batch.last_seq, chain_head=head)
        self.last_seq = batch.last_seq
        self.chain_head = head

    def _check_collisions(self, batch: PushBatch) -> None:
        tenant = self._tenant
        # seqs above last_seq are free (check_batch), so only dots and keys can collide.
        if any((c.replica_id, c.n) in tenant.change_ids for c in batch.changes):
            raise ValueError("push batch collides with stored rows: change dot already recorded")
        if any((c.seq, c.idx) in tenant.conflicts for c in batch.conflicts):
            raise ValueError("push batch collides with stored rows: conflict key already recorded")
        if any((d.replica_id, d.n) in tenant.dead_letters for d in batch.dead_letters):
            raise ValueError("push batch collides with stored rows: dead letter already recorded")

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError("this push session has already committed (or failed to)")


class MemoryStore:
    """The Store in memory. Not shared between processes; ``close`` forgets every tenant.

    Built from parts over one shared ``MemoryState``: the ``Store`` methods are
    here; ``MemoryKeys``, ``MemoryAdmin`` and ``MemoryChannels`` hold the other
    interfaces' methods, which this class exposes as its own (``via``).
    """

    def __init__(self) -> None:
        self._state = MemoryState()
        self._keys = MemoryKeys(self._state)
        self._admin = MemoryAdmin(self._state)
        self._channels = MemoryChannels(self._state)
        self._integrity = MemoryIntegrity(self._state)

    async def close(self) -> None:
        self._state.tenants.clear()

    async def ping(self) -> None:
        """Always succeeds."""

    async def create_tenant(self, tenant_id: str, first_key: WrappedKey, now_ms: int) -> None:
        """Raises ``TenantExists``, and ``ValueError`` if the key names another tenant."""
        if first_key.tenant_id != tenant_id:
            raise ValueError(f"key belongs to tenant {first_key.tenant_id!r}, not {tenant_id!r}")
        if tenant_id in self._state.tenants:
            raise TenantExists(tenant_id)
        record = TenantRecord(id=tenant_id, created_at=now_ms, last_seq=0, purged_seq=0)
        self._state.tenants[tenant_id] = TenantRows(record=record, keys=[first_key])

    async def get_tenant(self, tenant_id: str) -> TenantRecord | None:
        tenant = self._state.tenants.get(tenant_id)
        return tenant.record if tenant else None

    async def list_tenants(self) -> list[TenantRecord]:
        return [self._state.tenants[tid].record for tid in sorted(self._state.tenants)]

    async def tenant_keys(self, tenant_id: str) -> list[WrappedKey]:
        tenant = self._state.tenants.get(tenant_id)
        return sorted(tenant.keys, key=lambda key: key.version) if tenant else []

    def push_session(self, tenant_id: str) -> AbstractAsyncContextManager[PushSession]:
        """Hold the tenant's lock until exit; raises ``TenantNotFound`` on entry."""
        return self._push_session(tenant_id)

    @asynccontextmanager
    async def _push_session(self, tenant_id: str) -> AsyncIterator[PushSession]:
        async with self._state.locks(tenant_id):
            yield MemoryPushSession(self._state.require(tenant_id))

    async def pull(
        self, tenant_id: str, after_seq: int, limit: int, collections: Sequence[str] | None = None
    ) -> list[EntityRecord]:
        tenant = self._state.tenants.get(tenant_id)
        if tenant is None or limit <= 0:
            return []
        wanted = None if collections is None else set(collections)
        found = [
            e for e in tenant.entities.values() if e.seq > after_seq and (wanted is None or e.collection in wanted)
        ]
        found.sort(key=lambda e: (e.seq, e.collection, e.entity_id))
        return [as_read(tenant, e) for e in found[:limit]]

    async def get_entity(self, tenant_id: str, collection: str, entity_id: str) -> EntityRecord | None:
        tenant = self._state.tenants.get(tenant_id)
        found = tenant.entities.get((collection, entity_id)) if tenant else None
        return as_read(tenant, found) if tenant is not None and found is not None else None

    async def changes(
        self,
        tenant_id: str,
        after_seq: int,
        limit: int,
        *,
        collection: str | None = None,
        entity_id: str | None = None,
    ) -> list[ChangeRecord]:
        tenant = self._state.tenants.get(tenant_id)
        if tenant is None or limit <= 0:
            return []
        found = [
            c
            for seq, c in sorted(tenant.changes.items())
            if seq > after_seq
            and (collection is None or c.collection == collection)
            and (entity_id is None or c.entity_id == entity_id)
        ]
        return found[:limit]

    async def conflicts(
        self,
        tenant_id: str,
        after: tuple[int, int] | None,
        limit: int,
        filters: ConflictFilter | None = None,
    ) -> list[ConflictRecord]:
        tenant = self._state.tenants.get(tenant_id)
        if tenant is None or limit <= 0:
            return []
        wanted = filters or ConflictFilter()
        found = [
            c for key, c in sorted(tenant.conflicts.items()) if (after is None or key > after) and _matches(c, wanted)
        ]
        return found[:limit]

    async def get_conflict(self, tenant_id: str, seq: int, idx: int) -> ConflictRecord | None:
        tenant = self._state.tenants.get(tenant_id)
        return tenant.conflicts.get((seq, idx)) if tenant else None

    async def dead_letters(self, tenant_id: str, limit: int, status: str | None = None) -> list[DeadLetterRecord]:
        """Newest first; ties by ``(replica_id, n)`` descending, as in ``SqlStore``."""
        tenant = self._state.tenants.get(tenant_id)
        if tenant is None or limit <= 0:
            return []
        found = [d for d in tenant.dead_letters.values() if status is None or d.status == status]
        found.sort(key=lambda d: (d.created_at, d.replica_id, d.n), reverse=True)
        return found[:limit]

    async def purge_tombstones(self, tenant_id: str, updated_before_ms: int) -> int:
        """Takes the tenant lock, like ``SqlStore``. Raises ``TenantNotFound``."""
        async with self._state.locks(tenant_id):
            tenant = self._state.require(tenant_id)
            doomed = [k for k, e in tenant.entities.items() if e.deleted and e.updated_at < updated_before_ms]
            if doomed:
                purged_seq = max(tenant.record.purged_seq, *(tenant.entities[k].seq for k in doomed))
                for key in doomed:
                    tenant.purges[key] = tenant.entities[key].seq  # where its next change starts it anew
                    del tenant.entities[key]
                tenant.record = replace(tenant.record, purged_seq=purged_seq)
                purge_channel_rows(tenant, purged_seq)
            return len(doomed)

    # KeyStore
    add_tenant_key = via("_keys", MemoryKeys.add_tenant_key)
    rewrap_tenant_key = via("_keys", MemoryKeys.rewrap_tenant_key)
    destroy_tenant_keys = via("_keys", MemoryKeys.destroy_tenant_keys)
    key_usage = via("_keys", MemoryKeys.key_usage)
    sealed_rows = via("_keys", MemoryKeys.sealed_rows)
    reseal = via("_keys", MemoryKeys.reseal)
    checkpoint_macs = via("_keys", MemoryKeys.checkpoint_macs)
    remac_checkpoints = via("_keys", MemoryKeys.remac_checkpoints)
    erase_tenant = via("_keys", MemoryKeys.erase_tenant)
    changes_by_user = via("_keys", MemoryKeys.changes_by_user)

    # AdminStore
    find_conflicts = via("_admin", MemoryAdmin.find_conflicts)
    record_override = via("_admin", MemoryAdmin.record_override)
    conflict_override = via("_admin", MemoryAdmin.conflict_override)
    find_dead_letters = via("_admin", MemoryAdmin.find_dead_letters)
    get_dead_letter = via("_admin", MemoryAdmin.get_dead_letter)
    set_dead_letter_status = via("_admin", MemoryAdmin.set_dead_letter_status)
    change_at = via("_admin", MemoryAdmin.change_at)
    get_replica = via("_admin", MemoryAdmin.get_replica)
    append_audit = via("_admin", MemoryAdmin.append_audit)
    audit_log = via("_admin", MemoryAdmin.audit_log)

    # ChannelStore
    pull_in_channels = via("_channels", MemoryChannels.pull_in_channels)
    evictions = via("_channels", MemoryChannels.evictions)
    scoped_page = via("_channels", MemoryChannels.scoped_page)
    latest_in_channels = via("_channels", MemoryChannels.latest_in_channels)
    entity_channels = via("_channels", MemoryChannels.entity_channels)
    conflicts_in_channels = via("_channels", MemoryChannels.conflicts_in_channels)
    set_entity_channels = via("_channels", MemoryChannels.set_entity_channels)

    # IntegrityStore
    checkpoints = via("_integrity", MemoryIntegrity.checkpoints)
    purged = via("_integrity", MemoryIntegrity.purged)
    member_channels = via("_integrity", MemoryIntegrity.member_channels)
    record_verification = via("_integrity", MemoryIntegrity.record_verification)
    verifications = via("_integrity", MemoryIntegrity.verifications)


def _matches(conflict: ConflictRecord, wanted: ConflictFilter) -> bool:
    return all(
        expected is None or getattr(conflict, name) == expected
        for name, expected in (
            ("collection", wanted.collection),
            ("entity_id", wanted.entity_id),
            ("field", wanted.field),
            ("kind", wanted.kind),
            ("status", wanted.status),
        )
    )
