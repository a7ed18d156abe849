"""Master-key providers: they wrap and unwrap tenant data keys.

``KeyProvider`` is the seam for a KMS: an implementation only needs to wrap
and unwrap 32-byte keys. ``LocalKeyProvider`` holds the master key in process
memory, read from an environment variable or a file.

Master-key rotation: a provider wraps with its current master key and unwraps
with the current one or any previous one it was given, so servers keep working
while ``syncserver keys rotate-master`` rewraps every data key (see
docs/security.md). ``key_id`` names the current master key; a data key whose
``master_key_id`` differs still needs rewrapping.

Usage::

    provider = LocalKeyProvider.from_b64(os.environ["SYNC_MASTER_KEY"])
    wrapped = provider.wrap(data_key, aad=b"tenant-key/acme/1")
    assert provider.unwrap(wrapped, aad=b"tenant-key/acme/1") == data_key
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from syncserver.keys.envelope import DecryptionError, open_sealed, seal


class KeyProviderError(Exception):
    """The master key is missing, malformed, or cannot unwrap a data key."""


class KeyProvider(Protocol):
    """Wraps tenant data keys under a master key it never reveals."""

    key_id: str
    """Identifies the master key version; stored beside each wrapped key."""

    def wrap(self, data_key: bytes, aad: bytes) -> bytes:
        """Encrypt a data key. ``aad`` binds it to its tenant and version."""
        ...

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        """Decrypt a data key wrapped by the current or a previous master key.

        Raise ``KeyProviderError`` if no master key it holds opens it, or it was moved.
        """
        ...

    def check(self) -> None:
        """Raise ``KeyProviderError`` when the provider cannot serve (for readiness checks)."""
        ...


class LocalKeyProvider:
    """A 256-bit master key held in memory (from ``SYNC_MASTER_KEY`` or a file), plus previous ones.

    ``previous`` keys (``SYNC_MASTER_KEY_PREVIOUS``) only unwrap: they exist so a
    master-key rotation needs no downtime.
    """

    def __init__(self, master_key: bytes, previous: Sequence[bytes] = ()) -> None:
        for key in (master_key, *previous):
            if len(key) != 32:
                raise KeyProviderError("a master key must be 32 bytes (base64 of 32 random bytes)")
        self._aead = AESGCM(master_key)
        self._previous = [AESGCM(key) for key in previous if key != master_key]
        self.key_id = _fingerprint(master_key)
        self.previous_key_ids = tuple(_fingerprint(key) for key in previous if key != master_key)

    def __repr__(self) -> str:  # never show key material
        return f"LocalKeyProvider(key_id={self.key_id!r}, previous={list(self.previous_key_ids)!r})"

    @classmethod
    def from_b64(cls, encoded: str, previous: Sequence[str] = ()) -> LocalKeyProvider:
        return cls(_decode(encoded), [_decode(p) for p in previous])

    def wrap(self, data_key: bytes, aad: bytes) -> bytes:
        return seal(self._aead, data_key, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        # AES-GCM authenticates: a wrong master key fails the tag check, it never yields a wrong key.
        for aead in (self._aead, *self._previous):
            try:
                return open_sealed(aead, wrapped, aad)
            except DecryptionError:
                continue
        raise KeyProviderError("a tenant data key does not unwrap under this master key")

    def check(self) -> None:
        probe = b"\x00" * 32
        if self.unwrap(self.wrap(probe, b"probe"), b"probe") != probe:
            raise KeyProviderError("master key self-test failed")


def _fingerprint(master_key: bytes) -> str:
    # The id is a fingerprint, not the key: safe to store and log.
    return "local:" + hashlib.sha256(b"sync-master-key-id" + master_key).hexdigest()[:16]


def _decode(encoded: str) -> bytes:
    try:
        return base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyProviderError("a master key is not valid base64") from exc
