"""Small builders for store records, with defaults that make tests short to read."""

from __future__ import annotations

import uuid
from typing import overload

import msgspec

from syncstore import (
    ChangeRecord,
    ConflictRecord,
    DeadLetterRecord,
    EntityRecord,
    PushBatch,
    ReplicaRecord,
    WrappedKey,
)

NOW = 1_700_000_000_000


def new_tenant_id() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def key(tenant_id: str, version: int = 1, state: str = "active") -> WrappedKey:
    return WrappedKey(
        tenant_id=tenant_id,
        version=version,
        wrapped=b"wrapped-" + bytes([version]),
        master_key_id="mk-1",
        created_at=NOW,
        state=state,
    )


def entity(
    entity_id: str,
    seq: int,
    *,
    collection: str = "deliveries",
    deleted: bool = False,
    updated_at: int = NOW,
    state: bytes | None = None,
    vv: dict[str, int] | None = None,
) -> EntityRecord:
    return EntityRecord(
        collection=collection,
        entity_id=entity_id,
        seq=seq,
        deleted=deleted,
        key_version=1,
        state=state if state is not None else f"state:{entity_id}:{seq}".encode(),
        vv=vv if vv is not None else {"phone": seq},
        updated_at=updated_at,
    )


def change(
    seq: int,
    entity_id: str = "dlv-1",
    *,
    collection: str = "deliveries",
    replica_id: str = "phone",
    n: int | None = None,
    change_id: str | None = None,
) -> ChangeRecord:
    return ChangeRecord(
        seq=seq,
        change_id=change_id or f"chg-{replica_id}-{n if n is not None else seq}",
        collection=collection,
        entity_id=entity_id,
        replica_id=replica_id,
        n=n if n is not None else seq,
        hlc=(NOW + seq, seq % 3),
        user="user-1",
        context={replica_id: seq - 1, "other": 2} if seq > 1 else {},
        key_version=1,
        payload=f"ops:{seq}".encode(),
        created_at=NOW + seq,
    )


def conflict(
    seq: int,
    idx: int = 0,
    *,
    entity_id: str = "dlv-1",
    collection: str = "deliveries",
    field: str | None = "status",
    kind: str = "concurrent_set",
    status: str = "resolved",
) -> ConflictRecord:
    return ConflictRecord(
        seq=seq,
        idx=idx,
        collection=collection,
        entity_id=entity_id,
        field=field,
        kind=kind,
        rule="lww",
        status=status,
        created_at=NOW + seq,
        key_version=1,
        details=f"details:{seq}:{idx}".encode(),
    )


def dead_letter(
    n: int,
    *,
    replica_id: str = "phone",
    created_at: int = NOW,
    status: str = "open",
    change_id: str | None = None,
) -> DeadLetterRecord:
    return DeadLetterRecord(
        replica_id=replica_id,
        n=n,
        change_id=change_id or f"dead-{replica_id}-{n}",
        user="user-1",
        collection="deliveries",
        entity_id="dlv-1",
        code="schema_violation",
        message="unknown field 'colour'",
        key_version=1,
        payload=f"raw:{n}".encode(),
        created_at=created_at,
        status=status,
    )


def replica(replica_id: str = "phone", hwm: int = 1, owner: str = "user-1") -> ReplicaRecord:
    return ReplicaRecord(replica_id=replica_id, owner=owner, hwm=hwm)


def changes_batch(
    first_seq: int, count: int, *, replica_id: str = "phone", collection: str = "deliveries"
) -> PushBatch:
    """``count`` changes, one per entity, numbered from ``first_seq``, with their entity rows."""
    seqs = range(first_seq, first_seq + count)
    return PushBatch(
        last_seq=first_seq + count - 1,
        changes=[change(s, f"e-{s}", collection=collection, replica_id=replica_id) for s in seqs],
        entities=[entity(f"e-{s}", s, collection=collection) for s in seqs],
        replicas=[replica(replica_id, hwm=first_seq + count - 1)],
    )


@overload
def as_stored(read: EntityRecord | None) -> EntityRecord | None: ...
@overload
def as_stored(read: list[EntityRecord]) -> list[EntityRecord]: ...
def as_stored(read: EntityRecord | list[EntityRecord] | None) -> EntityRecord | list[EntityRecord] | None:
    """Entity rows as written: without ``latest_seq``, which reads bring from the change log (the integrity suite
    checks it)."""
    if read is None:
        return None
    if isinstance(read, list):
        return [msgspec.structs.replace(r, latest_seq=None) for r in read]
    return msgspec.structs.replace(read, latest_seq=None)
