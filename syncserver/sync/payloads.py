"""How each encrypted column is serialized (msgpack) and sealed, and under which AAD row id.

Every plaintext is framed (``compact.frame``: zstd when it saves bytes, against the dictionary of
the key version it is sealed under if that version has one, else against the built-in one) before
it is sealed, and unframed after it is opened; rows written before the frame existed read as they
always did. The change log's integrity chain hashes the ops' canonical msgpack
(``encode_ops``), never the framed bytes, so compression changes no chain link.

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
from syncserver.keys.dictionary import KeyDictionary
from syncserver.keys.keyring import TenantCipher
from syncserver.sync import compact
from syncstore.records import ChangeRecord, EntityRecord


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


def entity_row(collection: str, entity_id: str, seq: int = 0, chain: bytes | None = None) -> str:
    """An entity state is bound to its seq and the chain link of the change that produced it; rows from
    before the chain (``chain`` None) to their key only."""
    if chain is None:
        return f"{collection}/{entity_id}"
    return f"{collection}/{entity_id}@{seq}#{chain.hex()}"


def change_row(collection: str, entity_id: str, seq: int, chain: bytes | None = None) -> str:
    """A change's ops are bound to its seq and its own chain link (which commits to the previous one)."""
    if chain is None:
        return f"{collection}/{entity_id}@{seq}"
    return f"{collection}/{entity_id}@{seq}#{chain.hex()}"


def conflict_row(collection: str, entity_id: str, seq: int, idx: int) -> str:
    return f"{collection}/{entity_id}@{seq}.{idx}"


def dead_letter_row(replica: str, n: int, change_id: str) -> str:
    return f"{replica}/{n}/{change_id}"


def seal_entity(
    cipher: TenantCipher, collection: str, entity_id: str, stored: StoredEntity, seq: int, chain: bytes | None
) -> tuple[int, bytes]:
    row = entity_row(collection, entity_id, seq, chain)
    return cipher.seal("entities", row, encode_entity(stored, cipher.dictionary()))


def open_entity(cipher: TenantCipher, row: EntityRecord) -> StoredEntity:
    """The row's state; raises ``DecryptionError`` if it is not this row's (moved, altered, rolled back)."""
    aad_row = entity_row(row.collection, row.entity_id, row.seq, row.chain)
    plaintext = cipher.open("entities", aad_row, row.key_version, row.state)
    return decode_entity(plaintext, cipher.dictionary(row.key_version))


def entity_body(cipher: TenantCipher, row: EntityRecord) -> bytes:
    """The row's state as the msgpack body it was framed from (unframed, not decoded)."""
    aad_row = entity_row(row.collection, row.entity_id, row.seq, row.chain)
    return unframe(cipher, row.key_version, cipher.open("entities", aad_row, row.key_version, row.state))


def encode_entity(stored: StoredEntity, dictionary: KeyDictionary | None = None) -> bytes:
    """The framed plaintext an entity state is sealed as (``dictionary``: the sealing key version's)."""
    return compact.frame(_entity_enc.encode(stored), dictionary)


def decode_entity(plaintext: bytes, dictionary: KeyDictionary | None = None) -> StoredEntity:
    """An entity state from its sealed plaintext, framed or written before the frame (msgpack either way).

    An authenticated plaintext that does not decode is a ``FrameError`` (a ``DecryptionError``): read paths
    quarantine the row as they do any cell that does not open."""
    try:
        return _entity_dec.decode(compact.unframe(plaintext, dictionary)[1])
    except msgspec.DecodeError as exc:
        raise compact.FrameError(f"an entity state that does not decode: {exc}") from exc


def encode_ops(ops: list[Op]) -> bytes:
    """The plaintext a change's ops are sealed as (its SHA-256 goes into the chain link)."""
    return _entity_enc.encode(StoredOps(ops))


def seal_ops(
    cipher: TenantCipher, collection: str, entity_id: str, seq: int, chain: bytes | None, plaintext: bytes
) -> tuple[int, bytes]:
    """Seal ``plaintext`` (``encode_ops``) framed, usually compressed."""
    return cipher.seal("changes", change_row(collection, entity_id, seq, chain), frame(cipher, plaintext))


def open_ops_plaintext(cipher: TenantCipher, row: ChangeRecord) -> bytes:
    """The row's ops as ``encode_ops`` made them (what the chain hashes), unframed and decompressed.

    Raises ``DecryptionError`` if it is not this row's.
    """
    aad_row = change_row(row.collection, row.entity_id, row.seq, row.chain)
    return unframe(cipher, row.key_version, cipher.open("changes", aad_row, row.key_version, row.payload))


def decode_ops(plaintext: bytes) -> list[Op]:
    return _ops_dec.decode(plaintext).ops


def open_ops(cipher: TenantCipher, row: ChangeRecord) -> list[Op]:
    return decode_ops(open_ops_plaintext(cipher, row))


def seal_conflict(
    cipher: TenantCipher, collection: str, entity_id: str, seq: int, idx: int, body: StoredConflict
) -> tuple[int, bytes]:
    plaintext = frame(cipher, _entity_enc.encode(body))
    return cipher.seal("conflicts", conflict_row(collection, entity_id, seq, idx), plaintext)


def open_conflict(
    cipher: TenantCipher, collection: str, entity_id: str, seq: int, idx: int, version: int, blob: bytes
) -> StoredConflict:
    plaintext = cipher.open("conflicts", conflict_row(collection, entity_id, seq, idx), version, blob)
    return _conflict_dec.decode(unframe(cipher, version, plaintext))


def seal_dead_letter(cipher: TenantCipher, replica: str, n: int, change_id: str, raw: Any) -> tuple[int, bytes]:
    plaintext = frame(cipher, _entity_enc.encode(raw))
    return cipher.seal("dead_letters", dead_letter_row(replica, n, change_id), plaintext)


def open_dead_letter(cipher: TenantCipher, replica: str, n: int, change_id: str, version: int, blob: bytes) -> Any:
    plaintext = cipher.open("dead_letters", dead_letter_row(replica, n, change_id), version, blob)
    return msgspec.msgpack.decode(unframe(cipher, version, plaintext))


def frame(cipher: TenantCipher, body: bytes) -> bytes:
    """``body`` framed for sealing under the cipher's current key version (with its dictionary, if any)."""
    return compact.frame(body, cipher.dictionary())


def unframe(cipher: TenantCipher, version: int, plaintext: bytes) -> bytes:
    """The body of a plaintext opened under key version ``version`` (framed or legacy)."""
    return compact.unframe(plaintext, cipher.dictionary(version))[1]


def sealed_row_id(table: str, names: Mapping[str, object]) -> str:
    """The AAD row id of a cell of ``table`` from its plaintext key columns (``syncstore.keystore.NAME_COLUMNS``).

    Re-encryption uses it to open and reseal any cell without knowing what it holds.
    """
    match table:
        case "entities":
            chain = names.get("chain")
            return entity_row(str(names["collection"]), str(names["entity_id"]), _int(names["seq"]), _link(chain))
        case "changes":
            c, e, seq = str(names["collection"]), str(names["entity_id"]), _int(names["seq"])
            return change_row(c, e, seq, _link(names.get("chain")))
        case "conflicts":
            c, e = str(names["collection"]), str(names["entity_id"])
            return conflict_row(c, e, _int(names["seq"]), _int(names["idx"]))
        case "dead_letters":
            return dead_letter_row(str(names["replica_id"]), _int(names["n"]), str(names["change_id"]))
    raise ValueError(f"{table!r} is not a sealed table")


def _int(value: object) -> int:
    assert isinstance(value, int)
    return value


def _link(value: object) -> bytes | None:
    return bytes(value) if isinstance(value, bytes | bytearray | memoryview) else None
