"""Conversion between records (``records.py``) and table rows (``tables.py``).

The only place that knows column names and the JSON encoding of ``vv`` and
``context``. Keys are encoded sorted so equal maps are equal text. A change row
stores its id and its context compactly (ADR 0039): a canonical UUID as its 16
bytes (``pack_change_id``), and the change's own replica in its context as
``""`` with the distance to the change's counter (``pack_context``). msgspec does
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


UUID_DASHED = ""
UUID_HEX = "x"
"""The ``change_id`` column of a row whose ``change_uuid`` holds the id's 16 bytes: which text they stand for,
the canonical dashed form (``str(uuid.uuid4())``, what both SDKs send) or 32 lowercase hex digits
(``uuid.uuid4().hex``). A client's id is never empty, and a row without ``change_uuid`` holds its id as text."""


def pack_change_id(change_id: str) -> tuple[str, bytes | None]:
    """``(change_id column, change_uuid column)`` of a change id: a UUID in either canonical lowercase form is
    stored as its 16 bytes; any other id (uppercase, braces, not a UUID at all) as the text it is.

    Checked by formatting the bytes back and comparing, so a lenient parse can never change an id. Not
    ``uuid.UUID``: parsing and formatting through it took 1.7 µs a change on the push path, this 0.7."""
    size = len(change_id)
    if size == 36 and change_id[8] == change_id[13] == change_id[18] == change_id[23] == "-":
        raw = _hex_bytes(change_id.replace("-", ""))
        if raw is not None and _dashed(raw) == change_id:
            return UUID_DASHED, raw
    elif size == 32:
        raw = _hex_bytes(change_id)
        if raw is not None and raw.hex() == change_id:
            return UUID_HEX, raw
    return change_id, None


def unpack_change_id(column: str, raw: bytes | None) -> str:
    """The change id of a row's ``change_id`` and ``change_uuid`` columns (see ``pack_change_id``)."""
    if raw is None:
        return column
    raw = bytes(raw)
    return _dashed(raw) if column == UUID_DASHED else raw.hex()


def _hex_bytes(text: str) -> bytes | None:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def _dashed(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


OWN = ""
"""In a stored context, the change's own replica; its value is the change's counter minus the context's."""


def pack_context(context: Mapping[str, int], replica_id: str, n: int) -> str:
    """A change's context as stored: the change's own replica (the entry almost every change has, a device's
    previous change) named ``""`` with ``n`` minus its counter, usually 1; replica ids are never empty."""
    if replica_id not in context:
        return encode_counters(context)
    packed = dict(context)
    packed[OWN] = n - packed.pop(replica_id)
    return encode_counters(packed)  # keys sorted: ``""`` first


def unpack_context(text: str, replica_id: str, n: int) -> dict[str, int]:
    """``pack_context`` reversed; a context stored before it (no ``""`` key) reads as it was written."""
    context = decode_counters(text)
    distance = context.pop(OWN, None)
    if distance is None:
        return context
    context[replica_id] = n - distance
    return dict(sorted(context.items()))


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
    """A ``changes`` row: the tenant, replica and user as their numbers (``sql_log``, ADR 0033); the id and
    the context packed (ADR 0039)."""
    change_id, change_uuid = pack_change_id(change.change_id)
    return {
        "tenant_no": tenant_no,
        "seq": change.seq,
        "change_id": change_id,
        "change_uuid": change_uuid,
        "collection": change.collection,
        "entity_id": change.entity_id,
        "replica_no": replica_no,
        "n": change.n,
        "hlc_wall": change.hlc[0],
        "hlc_counter": change.hlc[1],
        "user_no": user_no,
        "context": pack_context(change.context, change.replica_id, change.n),
        "key_version": change.key_version,
        "payload": change.payload,
        "created_at": change.created_at,
        "chain": change.chain,
    }


def change_from_row(row: RowMapping) -> ChangeRecord:
    """A change read with its names joined back (``replica_id``, ``user_sub``; see ``sql_log``)."""
    hlc = (row["hlc_wall"], row["hlc_counter"])
    replica, n = row["replica_id"], row["n"]
    return _from_row(
        row,
        ChangeRecord,
        change_id=unpack_change_id(row["change_id"], row["change_uuid"]),
        hlc=hlc,
        user=row["user_sub"],
        context=unpack_context(row["context"], replica, n),
    )


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
