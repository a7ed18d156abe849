"""Conversion between records (``records.py``) and table rows (``tables.py``).

The only place that knows column names and the JSON encoding of ``vv`` and
``context``. Keys are encoded sorted so equal maps are equal text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from sqlalchemy import RowMapping

from syncstore.records import (
    ChangeRecord,
    ConflictRecord,
    DeadLetterRecord,
    EntityRecord,
    MembershipRecord,
    ReplicaRecord,
    TenantRecord,
    WrappedKey,
)

Row = dict[str, Any]

_encoder = msgspec.json.Encoder(order="sorted")
_counters = msgspec.json.Decoder(dict[str, int])


def encode_counters(value: Mapping[str, int]) -> str:
    """A version vector or causal context as JSON text."""
    return _encoder.encode(value).decode()


def decode_counters(text: str) -> dict[str, int]:
    return _counters.decode(text)


def tenant_from_row(row: RowMapping) -> TenantRecord:
    return TenantRecord(
        id=row["id"], created_at=row["created_at"], last_seq=row["last_seq"], purged_seq=row["purged_seq"]
    )


def key_to_row(key: WrappedKey) -> Row:
    return {
        "tenant_id": key.tenant_id,
        "version": key.version,
        "wrapped": key.wrapped,
        "master_key_id": key.master_key_id,
        "created_at": key.created_at,
        "state": key.state,
    }


def key_from_row(row: RowMapping) -> WrappedKey:
    return WrappedKey(
        tenant_id=row["tenant_id"],
        version=row["version"],
        wrapped=bytes(row["wrapped"]),
        master_key_id=row["master_key_id"],
        created_at=row["created_at"],
        state=row["state"],
    )


def replica_to_row(tenant_id: str, replica: ReplicaRecord) -> Row:
    return {"tenant_id": tenant_id, "replica_id": replica.replica_id, "owner": replica.owner, "hwm": replica.hwm}


def replica_from_row(row: RowMapping) -> ReplicaRecord:
    return ReplicaRecord(replica_id=row["replica_id"], owner=row["owner"], hwm=row["hwm"])


def entity_to_row(tenant_id: str, entity: EntityRecord) -> Row:
    return {
        "tenant_id": tenant_id,
        "collection": entity.collection,
        "entity_id": entity.entity_id,
        "seq": entity.seq,
        "deleted": entity.deleted,
        "key_version": entity.key_version,
        "state": entity.state,
        "vv": encode_counters(entity.vv),
        "updated_at": entity.updated_at,
    }


def entity_from_row(row: RowMapping) -> EntityRecord:
    return EntityRecord(
        collection=row["collection"],
        entity_id=row["entity_id"],
        seq=row["seq"],
        deleted=bool(row["deleted"]),
        key_version=row["key_version"],
        # psycopg returns bytes, but some drivers hand out memoryview.
        state=bytes(row["state"]),
        vv=decode_counters(row["vv"]),
        updated_at=row["updated_at"],
    )


def change_to_row(tenant_id: str, change: ChangeRecord) -> Row:
    return {
        "tenant_id": tenant_id,
        "seq": change.seq,
        "change_id": change.change_id,
        "collection": change.collection,
        "entity_id": change.entity_id,
        "replica_id": change.replica_id,
        "n": change.n,
        "hlc_wall": change.hlc[0],
        "hlc_counter": change.hlc[1],
        "user_sub": change.user,
        "context": encode_counters(change.context),
        "key_version": change.key_version,
        "payload": change.payload,
        "created_at": change.created_at,
    }


def change_from_row(row: RowMapping) -> ChangeRecord:
    return ChangeRecord(
        seq=row["seq"],
        change_id=row["change_id"],
        collection=row["collection"],
        entity_id=row["entity_id"],
        replica_id=row["replica_id"],
        n=row["n"],
        hlc=(row["hlc_wall"], row["hlc_counter"]),
        user=row["user_sub"],
        context=decode_counters(row["context"]),
        key_version=row["key_version"],
        payload=bytes(row["payload"]),
        created_at=row["created_at"],
    )


def conflict_to_row(tenant_id: str, conflict: ConflictRecord) -> Row:
    return {
        "tenant_id": tenant_id,
        "seq": conflict.seq,
        "idx": conflict.idx,
        "collection": conflict.collection,
        "entity_id": conflict.entity_id,
        "field": conflict.field,
        "kind": conflict.kind,
        "rule": conflict.rule,
        "status": conflict.status,
        "created_at": conflict.created_at,
        "key_version": conflict.key_version,
        "details": conflict.details,
    }


def conflict_from_row(row: RowMapping) -> ConflictRecord:
    return ConflictRecord(
        seq=row["seq"],
        idx=row["idx"],
        collection=row["collection"],
        entity_id=row["entity_id"],
        field=row["field"],
        kind=row["kind"],
        rule=row["rule"],
        status=row["status"],
        created_at=row["created_at"],
        key_version=row["key_version"],
        details=bytes(row["details"]),
    )


def dead_letter_to_row(tenant_id: str, letter: DeadLetterRecord) -> Row:
    return {
        "tenant_id": tenant_id,
        "replica_id": letter.replica_id,
        "n": letter.n,
        "change_id": letter.change_id,
        "user_sub": letter.user,
        "collection": letter.collection,
        "entity_id": letter.entity_id,
        "code": letter.code,
        "message": letter.message,
        "key_version": letter.key_version,
        "payload": letter.payload,
        "created_at": letter.created_at,
        "status": letter.status,
    }


def dead_letter_from_row(row: RowMapping) -> DeadLetterRecord:
    return DeadLetterRecord(
        replica_id=row["replica_id"],
        n=row["n"],
        change_id=row["change_id"],
        user=row["user_sub"],
        collection=row["collection"],
        entity_id=row["entity_id"],
        code=row["code"],
        message=row["message"],
        key_version=row["key_version"],
        payload=bytes(row["payload"]),
        created_at=row["created_at"],
        status=row["status"],
    )


def membership_to_row(tenant_id: str, row: MembershipRecord) -> Row:
    return {
        "tenant_id": tenant_id,
        "collection": row.collection,
        "entity_id": row.entity_id,
        "channel": row.channel,
        "seq": row.seq,
        "joined_seq": row.joined_seq,
        "member": row.member,
    }


def membership_from_row(row: RowMapping) -> MembershipRecord:
    return MembershipRecord(
        collection=row["collection"],
        entity_id=row["entity_id"],
        channel=row["channel"],
        seq=row["seq"],
        joined_seq=row["joined_seq"],
        member=bool(row["member"]),
    )
