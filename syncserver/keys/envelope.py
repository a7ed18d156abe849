"""Seal and open payloads with AES-256-GCM.

A sealed blob is ``0x01 | nonce (12 bytes) | ciphertext+tag``. The associated
data names the tenant, table, row and key version, so a ciphertext copied to
another row, table or tenant fails to open instead of decrypting to the wrong
owner's data.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT = b"\x01"
NONCE_BYTES = 12
TAG_BYTES = 16
OVERHEAD = 1 + NONCE_BYTES + TAG_BYTES
"""Bytes a sealed payload has beyond its plaintext."""

BytesLike = bytes | bytearray | memoryview
"""What large payloads (attachment chunks) travel as, so that slicing them copies nothing."""


class DecryptionError(Exception):
    """A ciphertext does not open under this key and associated data."""


def row_aad(tenant: str, table: str, row: str, key_version: int) -> bytes:
    # NUL separators cannot occur in ids (the protocol forbids them), so the
    # encoding is unambiguous.
    return b"\x00".join([b"sync/v1", tenant.encode(), table.encode(), row.encode(), str(key_version).encode()])


def seal(aead: AESGCM, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return FORMAT + nonce + aead.encrypt(nonce, plaintext, aad)


def seal_buffer(aead: AESGCM, plaintext: BytesLike, aad: bytes) -> bytearray:
    """``seal`` into one buffer allocated once (large payloads: the concatenation would copy them again)."""
    nonce = os.urandom(NONCE_BYTES)
    sealed = bytearray(1 + NONCE_BYTES + len(plaintext) + TAG_BYTES)
    sealed[: 1 + NONCE_BYTES] = FORMAT + nonce
    aead.encrypt_into(nonce, plaintext, aad, memoryview(sealed)[1 + NONCE_BYTES :])
    return sealed


def open_sealed_into(aead: AESGCM, blob: BytesLike, aad: bytes, out: memoryview) -> None:
    """``open_sealed`` into ``out``, which must be exactly the plaintext's length (no buffer of its own).

    On ``DecryptionError`` ``out`` holds unauthenticated bytes: the caller must discard it.
    """
    view = memoryview(blob)
    if len(view) != 1 + NONCE_BYTES + len(out) + TAG_BYTES or view[:1] != FORMAT:
        raise DecryptionError("not a sealed payload of a known format and the expected length")
    try:
        aead.decrypt_into(view[1 : 1 + NONCE_BYTES], view[1 + NONCE_BYTES :], aad, out)
    except InvalidTag as exc:
        raise DecryptionError("ciphertext does not belong to this row, tenant or key version") from exc


def open_sealed(aead: AESGCM, blob: BytesLike, aad: bytes) -> bytes:
    view = memoryview(blob)  # slices of a view are not copies (an attachment chunk is megabytes)
    if len(view) < 1 + NONCE_BYTES + TAG_BYTES or view[:1] != FORMAT:
        raise DecryptionError("not a sealed payload of a known format")
    try:
        return aead.decrypt(view[1 : 1 + NONCE_BYTES], view[1 + NONCE_BYTES :], aad)
    except InvalidTag as exc:
        raise DecryptionError("ciphertext does not belong to this row, tenant or key version") from exc
