"""The change log's hash chain: each change commits to the one before it.

Link of the change at seq ``s``::

    L(s) = SHA-256( L(s-1) | msgpack[seq, change id, collection, entity, replica, n, hlc, user,
                                      sorted context, created_at] | SHA-256(sealed ops plaintext) )

with ``L(first) `` built on ``genesis(tenant)``. ``L(s)`` is stored on the change
row and bound into its payload's associated data (``payloads.change_row``), and
an entity state's associated data binds its seq and ``L(seq)``; so deleting,
reordering, inserting or rolling back a log row breaks the chain, and
recomputing the chain breaks every payload after the change. Pushes extend it
under the same tenant lock that assigns seqs (several processes on PostgreSQL
included); the tenant row keeps the head. Every ``CHECKPOINT_EVERY`` seqs a
push also writes a checkpoint ``(seq, L(seq))`` MAC'd under a key derived from
the tenant's data key, which lets ``syncserver verify`` check a range, and
catches a truncated log tail up to the last checkpoint.

The link covers the ops' plaintext, not their ciphertext: key rotation and
re-encryption leave the chain as it is. A checkpoint's MAC is under the key version
active when it was written: it counts in that version's key usage (``keys status``,
``keys destroy`` refuses while one needs it), and ``keys reencrypt`` MACs it again
under the active version (``remac_checkpoint``), after checking it under its own. Rows written before the chain existed
have no link; a tenant's chain starts at its first change after the upgrade.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

import msgspec

from syncserver.keys.keyring import TenantCipher
from syncstore.records import ChangeRecord, CheckpointRecord

CHECKPOINT_EVERY = 1000
"""A push whose seqs cross a multiple of this writes a checkpoint at its last seq."""

_encoder = msgspec.msgpack.Encoder()


def genesis(tenant: str) -> bytes:
    return hashlib.sha256(b"sync/v1/chain\x00" + tenant.encode()).digest()


def link(prev: bytes, change: ChangeRecord, ops_plaintext: bytes) -> bytes:
    """``L(change.seq)`` from the previous link; ``change.chain`` and ``change.payload`` are not read."""
    dot = (
        change.seq,
        change.change_id,
        change.collection,
        change.entity_id,
        change.replica_id,
        change.n,
        change.hlc,
        change.user,
    )
    return link_fields(prev, dot, change.context, change.created_at, ops_plaintext)


def link_fields(
    prev: bytes,
    head: tuple[int, str, str, str, str, int, tuple[int, int], str],
    context: Mapping[str, int],
    created_at: int,
    ops_plaintext: bytes,
) -> bytes:
    """``link`` of a change not yet made a record (the push's hot path): ``head`` is its
    ``(seq, change_id, collection, entity_id, replica_id, n, hlc, user)``."""
    seq, change_id, collection, entity_id, replica_id, n, hlc, user = head
    meta = _encoder.encode(
        [
            seq,
            change_id,
            collection,
            entity_id,
            replica_id,
            n,
            hlc[0],
            hlc[1],
            user,
            sorted(context.items()),
            created_at,
        ]
    )
    digest = hashlib.sha256(prev)
    digest.update(len(meta).to_bytes(4, "big"))
    digest.update(meta)
    digest.update(hashlib.sha256(ops_plaintext).digest())
    return digest.digest()


def _checkpoint_message(tenant: str, seq: int, head: bytes) -> bytes:
    return b"sync/v1/checkpoint\x00" + tenant.encode() + b"\x00" + seq.to_bytes(8, "big") + head


def sign_checkpoint(cipher: TenantCipher, seq: int, head: bytes, now_ms: int) -> CheckpointRecord:
    version = cipher.current_version
    mac = bytes.fromhex(cipher.mac(version, _checkpoint_message(cipher.tenant, seq, head)))
    return CheckpointRecord(seq=seq, head=head, key_version=version, mac=mac, created_at=now_ms)


def checkpoint_valid(cipher: TenantCipher, checkpoint: CheckpointRecord) -> bool:
    """Whether the checkpoint's MAC is right (raises ``DecryptionError`` if its key version is gone)."""
    message = _checkpoint_message(cipher.tenant, checkpoint.seq, checkpoint.head)
    expected = bytes.fromhex(cipher.mac(checkpoint.key_version, message))
    return hmac.compare_digest(expected, checkpoint.mac)


def remac_checkpoint(cipher: TenantCipher, checkpoint: CheckpointRecord) -> bytes | None:
    """The checkpoint's MAC under the cipher's current key version (key rotation: ``keys reencrypt``).

    None if its MAC is wrong under its own version: a forged or damaged checkpoint is never signed
    anew. Raises ``DecryptionError`` if its own version is not available (destroyed or not loaded).
    """
    if not checkpoint_valid(cipher, checkpoint):
        return None
    message = _checkpoint_message(cipher.tenant, checkpoint.seq, checkpoint.head)
    return bytes.fromhex(cipher.mac(cipher.current_version, message))


def crosses_checkpoint(before: int, after: int) -> bool:
    return after // CHECKPOINT_EVERY > before // CHECKPOINT_EVERY
