"""How each encrypted column is serialized (msgpack) and sealed, and under which AAD row id.

Row ids in the AAD are built only from the row's own plaintext key columns, so
the server can always recompute them, and moving a blob to any other row fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from msgspec import Struct

from syncproto.merge import EntityState
from syncproto.messages import ConflictValue, Op
from syncserver.keys.keyring import TenantCipher


class StoredEntity(Struct, gc=False):
    """The plaintext inside ``entities.state``: merged state plus per-field change seqs."""

    state: EntityState
    field_seq: dict[str, int] = {}


class StoredOps(Struct, gc=False):
    ops: list[Op]


class StoredConflict(Struct, gc=False):
    values: list[ConflictValue]
    winner: ConflictValue | None = None
    note: str | None = None


_entity_enc = msgspec.msgpack.Encoder()
_entity_dec = msgspec.msgpack.Decoder(StoredEntity)
_ops_dec = msgspec.msgpack.Decoder(StoredOps)
_conflict_dec = msgspec.msgpack.Decoder(StoredConflict)


def entity_row(collection: str, entity_id: str) -> str:
    return f"{collection}/{entity_id}"


def change_row(collection: str, entity_id: str, seq: int) -> str:
    return f"{collection}/{entity_id}@{seq}"


def conflict_row(collection: str, entity_id: str, seq: int, idx: int) -> str:
    return f"{collection}/{entity_id}@{seq}.{idx}"


def dead_letter_row(replica: str, n: int, change_id: str) -> str:
    return f"{replica}/{n}/{change_id}"


def seal_entity(cipher: TenantCipher, collection: str, entity_id: str, stored: StoredEntity) -> tuple[int, bytes]:
    return cipher.seal("entities", entity_row(collection, entity_id), _entity_enc.encode(stored))


def open_entity(cipher: TenantCipher, collection: str, entity_id: str, version: int, blob: bytes) -> StoredEntity:
    return _entity_dec.decode(cipher.open("entities", entity_row(collection, entity_id), version, blob))


def seal_ops(cipher: TenantCipher, collection: str, entity_id: str, seq: int, ops: list[Op]) -> tuple[int, bytes]:
    return cipher.seal("changes", change_row(collection, entity_id, seq), _entity_enc.encode(StoredOps(ops)))


def open_ops(cipher: TenantCipher, collection: str, entity_id: str, seq: int, version: int, blob: bytes) -> list[Op]:
    return _ops_dec.decode(cipher.open("changes", change_row(collection, entity_id, seq), version, blob)).ops


def seal_conflict(
    cipher: TenantCipher, collection: str, entity_id: str, seq: int, idx: int, body: StoredConflict
) -> tuple[int, bytes]:
    return cipher.seal("conflicts", conflict_row(collection, entity_id, seq, idx), _entity_enc.encode(body))


def open_conflict(
    cipher: TenantCipher, collection: str, entity_id: str, seq: int, idx: int, version: int, blob: bytes
) -> StoredConflict:
    return _conflict_dec.decode(cipher.open("conflicts", conflict_row(collection, entity_id, seq, idx), version, blob))


def seal_dead_letter(cipher: TenantCipher, replica: str, n: int, change_id: str, raw: Any) -> tuple[int, bytes]:
    return cipher.seal("dead_letters", dead_letter_row(replica, n, change_id), _entity_enc.encode(raw))


def open_dead_letter(cipher: TenantCipher, replica: str, n: int, change_id: str, version: int, blob: bytes) -> Any:
    return msgspec.msgpack.decode(cipher.open("dead_letters", dead_letter_row(replica, n, change_id), version, blob))


def sealed_row_id(table: str, names: Mapping[str, str | int]) -> str:
    """The AAD row id of a cell of ``table`` from its plaintext key columns (``syncstore.keystore.NAME_COLUMNS``).

    Re-encryption uses it to open and reseal any cell without knowing what it holds.
    """
    match table:
        case "entities":
            return entity_row(str(names["collection"]), str(names["entity_id"]))
        case "changes":
            return change_row(str(names["collection"]), str(names["entity_id"]), int(names["seq"]))
        case "conflicts":
            c, e = str(names["collection"]), str(names["entity_id"])
            return conflict_row(c, e, int(names["seq"]), int(names["idx"]))
        case "dead_letters":
            return dead_letter_row(str(names["replica_id"]), int(names["n"]), str(names["change_id"]))
    raise ValueError(f"{table!r} is not a sealed table")
