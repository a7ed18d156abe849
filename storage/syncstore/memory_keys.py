"""``MemoryKeys``: the ``KeyStore`` part of ``MemoryStore`` (see ``keystore.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from msgspec.structs import replace

from syncstore.keystore import (
    CHECKPOINTS,
    NAME_COLUMNS,
    SEALED_COLUMN,
    SEALED_TABLES,
    KeyPart,
    Remac,
    Resealed,
    SealedRow,
    SealedTable,
)
from syncstore.memory_state import MemoryState, TenantRows
from syncstore.records import ChangeRecord, CheckpointRecord, WrappedKey

_KEY_FIELDS: dict[SealedTable, tuple[str, ...]] = {
    "entities": ("collection", "entity_id"),
    "changes": ("seq",),
    "conflicts": ("seq", "idx"),
    "dead_letters": ("replica_id", "n"),
}


class MemoryKeys:
    """The ``KeyStore`` part of ``MemoryStore``, over the store's shared ``MemoryState``."""

    def __init__(self, state: MemoryState) -> None:
        self._state = state

    async def add_tenant_key(self, key: WrappedKey) -> None:
        async with self._state.locks(key.tenant_id):
            tenant = self._state.require(key.tenant_id)
            if any(k.version == key.version for k in tenant.keys):
                raise ValueError(f"tenant {key.tenant_id!r} already has key version {key.version}")
            retired = [replace(k, state="retired") if k.state == "active" else k for k in tenant.keys]
            tenant.keys = [*retired, replace(key, state="active")]

    async def rewrap_tenant_key(self, key: WrappedKey, wrapped: bytes, master_key_id: str) -> bool:
        tenant = self._state.tenants.get(key.tenant_id)
        if tenant is None:
            return False
        for i, k in enumerate(tenant.keys):
            if k.version == key.version and k.wrapped == key.wrapped:
                tenant.keys[i] = replace(k, wrapped=wrapped, master_key_id=master_key_id)
                return True
        return False

    async def destroy_tenant_keys(self, tenant_id: str, versions: Sequence[int] | None = None) -> int:
        tenant = self._state.tenants.get(tenant_id)
        if tenant is None:
            return 0
        count = 0
        for i, k in enumerate(tenant.keys):
            if k.state != "destroyed" and (versions is None or k.version in versions):
                tenant.keys[i] = replace(k, wrapped=b"", state="destroyed", dictionary=None)
                count += 1
        return count

    async def key_usage(self, tenant_id: str) -> dict[str, dict[int, int]]:
        tenant = self._state.tenants.get(tenant_id)
        usage: dict[str, dict[int, int]] = {}
        for table in SEALED_TABLES:
            counts: dict[int, int] = {}
            for record in _records(tenant, table).values():
                counts[record.key_version] = counts.get(record.key_version, 0) + 1
            usage[table] = counts
        marks: dict[int, int] = {}
        for mark in tenant.checkpoints.values() if tenant is not None else ():
            marks[mark.key_version] = marks.get(mark.key_version, 0) + 1
        usage[CHECKPOINTS] = marks
        return usage

    async def checkpoint_macs(
        self, tenant_id: str, *, not_version: int, after: int | None, limit: int
    ) -> list[CheckpointRecord]:
        tenant = self._state.tenants.get(tenant_id)
        if tenant is None or limit <= 0:
            return []
        found = [
            c
            for seq, c in sorted(tenant.checkpoints.items())
            if c.key_version != not_version and (after is None or seq > after)
        ]
        return found[:limit]

    async def remac_checkpoints(self, tenant_id: str, rows: Sequence[Remac]) -> int:
        tenant = self._state.tenants.get(tenant_id)
        if tenant is None:
            return 0
        done = 0
        for row in rows:
            current = tenant.checkpoints.get(row.seq)
            if current is None or current.key_version != row.old_version or current.mac != row.old_mac:
                continue
            tenant.checkpoints[row.seq] = replace(current, key_version=row.key_version, mac=row.mac)
            done += 1
        return done

    async def sealed_rows(
        self, tenant_id: str, table: SealedTable, *, not_version: int, after: tuple[KeyPart, ...] | None, limit: int
    ) -> list[SealedRow]:
        records = _records(self._state.tenants.get(tenant_id), table)
        found = []
        for key in sorted(records):
            record = records[key]
            if record.key_version == not_version or (after is not None and key <= after):
                continue
            found.append(
                SealedRow(
                    table=table,
                    key=key,
                    names={n: getattr(record, n) for n in NAME_COLUMNS[table]},
                    key_version=record.key_version,
                    blob=getattr(record, SEALED_COLUMN[table]),
                )
            )
            if len(found) >= limit:
                break
        return found

    async def reseal(self, tenant_id: str, table: SealedTable, rows: Sequence[Resealed]) -> int:
        tenant = self._state.tenants.get(tenant_id)
        if tenant is None:
            return 0
        store = _store(tenant, table)
        column = SEALED_COLUMN[table]
        done = 0
        for row in rows:
            key: Any = row.key if len(row.key) > 1 else row.key[0]
            current = store.get(key)
            if current is None or current.key_version != row.old_version or getattr(current, column) != row.old_blob:
                continue
            store[key] = replace(current, key_version=row.key_version, **{column: row.blob})
            done += 1
        return done

    async def erase_tenant(self, tenant_id: str) -> dict[str, int]:
        async with self._state.locks(tenant_id):
            tenant = self._state.tenants.pop(tenant_id, None)
            if tenant is None:
                return {}
            overrides = self._state.overrides
            for key in [k for k in overrides if k[0] == tenant_id]:
                del overrides[key]
            return {
                "entities": len(tenant.entities),
                "changes": len(tenant.changes),
                "conflicts": len(tenant.conflicts),
                "dead_letters": len(tenant.dead_letters),
                "replicas": len(tenant.replicas),
                "entity_channels": sum(len(rows) for rows in tenant.channels.values()),
                "tenant_keys": len(tenant.keys),
                "tenants": 1,
            }

    async def changes_by_user(self, tenant_id: str, user: str, after_seq: int, limit: int) -> list[ChangeRecord]:
        tenant = self._state.tenants.get(tenant_id)
        if tenant is None or limit <= 0:
            return []
        found = [c for seq, c in sorted(tenant.changes.items()) if seq > after_seq and c.user == user]
        return found[:limit]


def _store(tenant: TenantRows, table: SealedTable) -> dict[Any, Any]:
    stores: dict[SealedTable, dict[Any, Any]] = {
        "entities": tenant.entities,
        "changes": tenant.changes,
        "conflicts": tenant.conflicts,
        "dead_letters": tenant.dead_letters,
    }
    return stores[table]


def _records(tenant: TenantRows | None, table: SealedTable) -> dict[tuple[KeyPart, ...], Any]:
    """The table's records keyed by their primary key as a tuple (as ``SqlStore`` returns it)."""
    if tenant is None:
        return {}
    return {tuple(getattr(r, f) for f in _KEY_FIELDS[table]): r for r in _store(tenant, table).values()}
