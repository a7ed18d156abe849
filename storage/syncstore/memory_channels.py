"""``MemoryChannels``: the ``ChannelStore`` part of ``MemoryStore`` (see ``channels.py``).

Channel rows live in each tenant's ``channels`` map (written by the push
session's commit); these reads scan them, which is fine for tests.
"""

from __future__ import annotations

from collections.abc import Sequence

from msgspec.structs import replace

from syncstore.channels import EvictionRecord, ScopedEntity, ScopedPage
from syncstore.memory_state import MemoryState, TenantRows, as_read
from syncstore.records import ConflictFilter, ConflictRecord, MembershipRecord


class MemoryChannels:
    """The ``ChannelStore`` part of ``MemoryStore``, over the store's shared ``MemoryState``."""

    def __init__(self, state: MemoryState) -> None:
        self._state = state

    async def pull_in_channels(
        self,
        tenant_id: str,
        channels: Sequence[str],
        after_seq: int,
        limit: int,
        collections: Sequence[str] | None = None,
    ) -> list[ScopedEntity]:
        tenant = self._state.tenants.get(tenant_id)
        wanted = set(channels)
        if tenant is None or limit <= 0 or not wanted:
            return []
        found = []
        for key, rows in tenant.channels.items():
            joined = [m.joined_seq for c, m in rows.items() if c in wanted and m.member]
            entity = tenant.entities.get(key)
            if joined and entity is not None and entity.seq > after_seq and _in(entity.collection, collections):
                found.append(ScopedEntity(as_read(tenant, entity), min(joined)))
        found.sort(key=lambda s: (s.record.seq, s.record.collection, s.record.entity_id))
        return found[:limit]

    async def evictions(
        self,
        tenant_id: str,
        channels: Sequence[str],
        after_seq: int,
        limit: int,
        collections: Sequence[str] | None = None,
    ) -> list[EvictionRecord]:
        tenant = self._state.tenants.get(tenant_id)
        wanted = set(channels)
        if tenant is None or limit <= 0 or not wanted:
            return []
        found = []
        for (collection, entity_id), rows in tenant.channels.items():
            mine = [m for c, m in rows.items() if c in wanted]
            if any(m.member for m in mine) or not _in(collection, collections):
                continue
            left = [m.seq for m in mine if m.seq > after_seq]
            if left:
                entity = tenant.entities.get((collection, entity_id))
                record = as_read(tenant, entity) if entity is not None else None
                found.append(EvictionRecord(collection, entity_id, max(left), record))
        found.sort(key=lambda e: (e.seq, e.collection, e.entity_id))
        return found[:limit]

    async def scoped_page(
        self,
        tenant_id: str,
        channels: Sequence[str],
        after_seq: int,
        limit: int,
        collections: Sequence[str] | None = None,
        *,
        evictions: bool = True,
    ) -> ScopedPage:
        tenant = self._state.tenants.get(tenant_id)
        if tenant is None:
            return ScopedPage(None, [], [])
        found = await self.pull_in_channels(tenant_id, channels, after_seq, limit, collections)
        gone = await self.evictions(tenant_id, channels, after_seq, limit, collections) if evictions else []
        return ScopedPage(tenant.record, found, gone)

    async def latest_in_channels(self, tenant_id: str, channels: Sequence[str], after_seq: int) -> dict[str, int]:
        tenant = self._state.tenants.get(tenant_id)
        wanted = set(channels)
        latest: dict[str, int] = {}
        for rows in tenant.channels.values() if tenant else []:
            for channel, m in rows.items():
                if channel in wanted and m.seq > max(after_seq, latest.get(channel, 0)):
                    latest[channel] = m.seq
        return latest

    async def entity_channels(self, tenant_id: str, collection: str, entity_id: str) -> dict[str, int]:
        tenant = self._state.tenants.get(tenant_id)
        rows = tenant.channels.get((collection, entity_id), {}) if tenant else {}
        return {c: m.joined_seq for c, m in rows.items() if m.member}

    async def conflicts_in_channels(
        self,
        tenant_id: str,
        channels: Sequence[str],
        after: tuple[int, int] | None,
        limit: int,
        filters: ConflictFilter | None = None,
    ) -> list[ConflictRecord]:
        tenant = self._state.tenants.get(tenant_id)
        wanted = set(channels)
        if tenant is None or limit <= 0 or not wanted:
            return []
        f = filters or ConflictFilter()
        found = []
        for key, c in sorted(tenant.conflicts.items()):
            if after is not None and key <= after:
                continue
            rows = tenant.channels.get((c.collection, c.entity_id), {})
            if not any(m.member and ch in wanted for ch, m in rows.items()):
                continue
            if all(
                want is None or getattr(c, name) == want
                for name, want in (
                    ("collection", f.collection),
                    ("entity_id", f.entity_id),
                    ("field", f.field),
                    ("kind", f.kind),
                    ("status", f.status),
                )
            ):
                found.append(c)
        return found[:limit]

    async def set_entity_channels(
        self, tenant_id: str, collection: str, entity_id: str, expected_seq: int, channels: Sequence[str]
    ) -> bool:
        async with self._state.locks(tenant_id):
            tenant = self._state.require(tenant_id)
            entity = tenant.entities.get((collection, entity_id))
            if entity is None or entity.seq != expected_seq:
                return False
            rows = dict(tenant.channels.get((collection, entity_id), {}))
            wanted = set(channels)
            for c, m in list(rows.items()):
                if m.member and c not in wanted:
                    rows[c] = replace(m, member=False, seq=expected_seq)
            for c in wanted:
                if c not in rows or not rows[c].member:
                    rows[c] = MembershipRecord(collection, entity_id, c, expected_seq, expected_seq, True)
            tenant.channels[(collection, entity_id)] = rows
            return True


def _in(collection: str, collections: Sequence[str] | None) -> bool:
    return collections is None or collection in collections


def purge_channel_rows(tenant: TenantRows, purged_seq: int) -> None:
    """Inside a purge: drop evictions no cursor can need, and rows of entities that no longer exist."""
    for key in list(tenant.channels):
        exists = key in tenant.entities
        kept = {c: m for c, m in tenant.channels[key].items() if m.seq > purged_seq or (m.member and exists)}
        if kept:
            tenant.channels[key] = kept
        else:
            del tenant.channels[key]
