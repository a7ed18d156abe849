"""Conversion between records (``records.py``) and table rows (``tables.py``).

The only place that knows column names and the JSON encoding of ``vv`` and
``context``. Keys are encoded sorted so equal maps are equal text. msgspec does
the field-by-field work (``structs.asdict`` out, ``convert`` in, in lax mode so a
SQLite ``0``/``1`` is a bool and a driver's ``memoryview`` is bytes); only the
columns whose name or encoding differs from the record are spelled out here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
from sqlalchemy import RowMapping

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

Row = dict[str, Any]
R = TypeVar("R", bound=msgspec.Struct)

_encoder = msgspec.json.Encoder(order="sorted")
_counters = msgspec.json.Decoder(dict[str, int])


def encode_counters(value: Mapping[str, int]) -> str:
    """A version vector or causal context as JSON text."""
    return _encoder.encode(value).decode()


def decode_counters(text: str) -> dict[str, int]:
    return _counters.decode(text)


def _to_row(tenant_id: str, record: msgspec.Struct, **columns: Any) -> Row:
    """The record's fields as columns, with ``tenant_id`` and the ``columns`` that differ."""
    return {"tenant_id": tenant_id, **msgspec.structs.asdict(record), **columns}


def _from_row(row: RowMapping, kind: type[R], **fields: Any) -> R:
    """The record of a row, with the ``fields`` whose column differs; other columns are ignored."""
    # Column names may be ``quoted_name`` (a str subclass), which msgspec does not take as a key.
    return msgspec.convert({str(k): v for k, v in row.items()} | fields, kind, strict=False)


def tenant_from_row(row: RowMapping) -> TenantRecord:
    return _from_row(row, TenantRecord)


def key_to_row(key: WrappedKey) -> Row:
    return _to_row(key.tenant_id, key)


def key_from_row(row: RowMapping) -> WrappedKey:
    return _from_row(row, WrappedKey)


def replica_to_row(tenant_id: str, replica: ReplicaRecord) -> Row:
    return _to_row(tenant_id, replica)


def replica_from_row(row: RowMapping) -> ReplicaRecord:
    return _from_row(row, ReplicaRecord)


def entity_to_row(tenant_no: int, entity: EntityRecord) -> Row:
    """An ``entities`` row: the tenant by number (ADR 0033)."""
    row = {"tenant_no": tenant_no, **msgspec.structs.asdict(entity), "vv": encode_counters(entity.vv)}
    del row["latest_seq"]  # read from the change log, never stored
    return row


def entity_from_row(row: RowMapping) -> EntityRecord:
    """Built field by field: every pull page makes a thousand of these, and the generic ``_from_row`` (a dict
    of every column, then ``msgspec.convert``) cost a fifth of a pull's server time."""
    chain = row["chain"]
    return EntityRecord(
        collection=row["collection"],
        entity_id=row["entity_id"],
        seq=row["seq"],
        deleted=bool(row["deleted"]),
        key_version=row["key_version"],
        state=bytes(row["state"]),
        vv=decode_counters(row["vv"]),
        updated_at=row["updated_at"],
        chain=None if chain is None else bytes(chain),
        latest_seq=row["latest_seq"],
    )


def change_to_row(tenant_no: int, change: ChangeRecord, replica_no: int, user_no: int) -> Row:
    """A ``changes`` row: the tenant, replica and user as their numbers (``sql_log``, ADR 0033)."""
    return {
        "tenant_no": tenant_no,
        "seq": change.seq,
        "change_id": change.change_id,
        "collection": change.collection,
        "entity_id": change.entity_id,
        "replica_no": replica_no,
        "n": change.n,
        "hlc_wall": change.hlc[0],
        "hlc_counter": change.hlc[1],
        "user_no": user_no,
        "context": encode_counters(change.context),
        "key_version": change.key_version,
        "payload": change.payload,
        "created_at": change.created_at,
        "chain": change.chain,
    }


def change_from_row(row: RowMapping) -> ChangeRecord:
    """A change read with its names joined back (``replica_id``, ``user_sub``; see ``sql_log``)."""
    hlc = (row["hlc_wall"], row["hlc_counter"])
    return _from_row(row, ChangeRecord, hlc=hlc, user=row["user_sub"], context=decode_counters(row["context"]))


def conflict_to_row(tenant_id: str, conflict: ConflictRecord) -> Row:
    return _to_row(tenant_id, conflict)


def conflict_from_row(row: RowMapping) -> ConflictRecord:
    return _from_row(row, ConflictRecord)


def dead_letter_to_row(tenant_id: str, letter: DeadLetterRecord) -> Row:
    row = _to_row(tenant_id, letter, user_sub=letter.user)
    del row["user"]
    return row


def dead_letter_from_row(row: RowMapping) -> DeadLetterRecord:
    return _from_row(row, DeadLetterRecord, user=row["user_sub"])


def membership_to_row(tenant_no: int, row: MembershipRecord) -> Row:
    """An ``entity_channels`` row: the tenant by number (ADR 0033)."""
    return {"tenant_no": tenant_no, **msgspec.structs.asdict(row)}


def membership_from_row(row: RowMapping) -> MembershipRecord:
    return _from_row(row, MembershipRecord)


def checkpoint_to_row(tenant_id: str, checkpoint: CheckpointRecord) -> Row:
    return _to_row(tenant_id, checkpoint)


def checkpoint_from_row(row: RowMapping) -> CheckpointRecord:
    return _from_row(row, CheckpointRecord)


def verification_to_row(tenant_id: str, record: VerificationRecord) -> Row:
    return _to_row(tenant_id, record)


def verification_from_row(row: RowMapping) -> VerificationRecord:
    return _from_row(row, VerificationRecord)
