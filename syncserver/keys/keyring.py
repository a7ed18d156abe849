"""Tenant data keys: creation, unwrapping with a TTL cache, and per-row sealing.

Unwrapped keys live only in this process's memory, in a TTL cache. They are
never logged, never put in error messages and never sent to Redis.

Across processes the cache is invalidated by its TTL (``SYNC_KEY_CACHE_TTL_S``)
and by need: a reader that meets a key version its cached cipher lacks reloads
the keys at once (``cipher(tenant, need=...)``). So after a rotation other
processes read new rows immediately and start writing under the new version
within one TTL.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from cachetools import TTLCache
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from syncserver.keys.dictionary import KeyDictionary
from syncserver.keys.envelope import (
    BytesLike,
    DecryptionError,
    open_sealed,
    open_sealed_into,
    row_aad,
    seal,
    seal_buffer,
)
from syncserver.keys.providers import KeyProvider
from syncstore.records import WrappedKey
from syncstore.store import Store, TenantNotFound

log = logging.getLogger("syncserver.keys")


def wrap_aad(tenant: str, version: int) -> bytes:
    return f"tenant-key/{tenant}/{version}".encode()


def dictionary_aad(tenant: str, version: int) -> bytes:
    """A key version's dictionary is sealed under that version's own data key, bound to it."""
    return row_aad(tenant, "tenant_keys", "dictionary", version)


class TenantCipher:
    """Seals with the tenant's current key; opens any version it holds."""

    __slots__ = ("_dictionaries", "_keys", "_mac_keys", "current_version", "tenant")

    def __init__(
        self,
        tenant: str,
        keys: dict[int, AESGCM],
        current_version: int,
        mac_keys: dict[int, bytes] | None = None,
        dictionaries: dict[int, KeyDictionary] | None = None,
    ) -> None:
        self.tenant = tenant
        self._keys = keys
        self._mac_keys = mac_keys or {}
        self._dictionaries = dictionaries or {}
        self.current_version = current_version

    def __repr__(self) -> str:  # never show key material
        return f"TenantCipher(tenant={self.tenant!r}, versions={sorted(self._keys)})"

    def has(self, versions: Iterable[int]) -> bool:
        """Whether this cipher holds every one of these key versions."""
        return all(v in self._keys for v in versions)

    def dictionary(self, version: int | None = None) -> KeyDictionary | None:
        """The compression dictionary of key version ``version`` (default: the current one), if it has one.

        A plaintext sealed under a version is framed against that version's dictionary and no other
        (``syncserver.sync.compact``)."""
        return self._dictionaries.get(self.current_version if version is None else version)

    def seal(self, table: str, row: str, plaintext: bytes, version: int | None = None) -> tuple[int, bytes]:
        """Seal under the current key version, or under ``version`` (a blob that began under an older one)."""
        v = self.current_version if version is None else version
        if v not in self._keys:
            raise DecryptionError(f"key version {v} of this tenant is not available")
        return v, seal(self._keys[v], plaintext, row_aad(self.tenant, table, row, v))

    def seal_buffer(self, table: str, row: str, plaintext: BytesLike, version: int) -> bytearray:
        """``seal`` under ``version`` into one new buffer: for large payloads (attachment chunks), one copy fewer."""
        if version not in self._keys:
            raise DecryptionError(f"key version {version} of this tenant is not available")
        return seal_buffer(self._keys[version], plaintext, row_aad(self.tenant, table, row, version))

    def mac(self, key_version: int, data: bytes) -> str:
        """A keyed hash (HMAC-SHA256, hex) under a key derived from this tenant's data key of ``key_version``.

        Equal ``data`` gives equal MACs within a tenant and unrelated ones across tenants (attachment dedup).
        """
        key = self._mac_keys.get(key_version)
        if key is None:
            raise DecryptionError(f"key version {key_version} of this tenant is not available")
        return hmac.new(key, data, hashlib.sha256).hexdigest()

    def open(self, table: str, row: str, key_version: int, blob: BytesLike) -> bytes:
        key = self._keys.get(key_version)
        if key is None:
            raise DecryptionError(f"key version {key_version} of this tenant is not available")
        return open_sealed(key, blob, row_aad(self.tenant, table, row, key_version))

    def open_into(self, table: str, row: str, key_version: int, blob: BytesLike, out: memoryview) -> None:
        """``open`` into ``out`` (exactly the plaintext's length); on ``DecryptionError`` discard ``out``."""
        key = self._keys.get(key_version)
        if key is None:
            raise DecryptionError(f"key version {key_version} of this tenant is not available")
        open_sealed_into(key, blob, row_aad(self.tenant, table, row, key_version), out)


def _open_dictionary(tenant: str, key: WrappedKey, aead: AESGCM) -> KeyDictionary | None:
    """The version's dictionary, or None if it has none or it does not open.

    One that does not open (tampered, damaged) is logged and left out: rows framed against it then fail
    to open one by one (quarantined, reported by ``verify``) while every other row of the tenant still
    reads and new rows are written with the built-in dictionary.
    """
    if not key.dictionary:
        return None
    try:
        return KeyDictionary(open_sealed(aead, key.dictionary, dictionary_aad(tenant, key.version)))
    except DecryptionError as exc:
        log.error(
            "a key version's compression dictionary does not open",
            extra={"tenant": tenant, "version": key.version, "error": type(exc).__name__},
        )
        return None


def _mac_key(data_key: bytes) -> bytes:
    # A separate key for keyed hashes: a data key is only ever used for AES-GCM.
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"sync/v1/attachment-mac").derive(data_key)


@dataclass
class CacheStats:
    """Key-cache counters; they only grow (exported as Prometheus counters)."""

    hits: int = 0
    misses: int = 0


class Ciphers(Protocol):
    """What the sync services need of the keyring: a tenant's cipher (``TenantKeyring`` is the one)."""

    async def cipher(self, tenant: str, need: Iterable[int] = ()) -> TenantCipher:
        """The tenant's cipher, holding at least the key versions in ``need``."""
        ...


class TenantKeyring:
    """Hands out ``TenantCipher``s, unwrapping data keys through the ``KeyProvider``."""

    def __init__(self, store: Store, provider: KeyProvider, ttl_s: float = 300) -> None:
        self._store = store
        self._provider = provider
        self.ttl_s = ttl_s
        """How long a tenant's keys stay cached (``SYNC_KEY_CACHE_TTL_S``): a change of keys in another process
        reaches this one within it."""
        self._cache: TTLCache[str, TenantCipher] = TTLCache(maxsize=10_000, ttl=ttl_s)
        self._forgets = 0
        """How many times ``forget`` ran: a load that saw it change while it read keys does not cache them."""
        self.stats = CacheStats()

    def new_key(self, tenant: str, version: int, dictionary: bytes | None = None) -> WrappedKey:
        """A new data key, wrapped; with ``dictionary`` (``syncserver.keys.dictionary``) sealed under it."""
        data_key = AESGCM.generate_key(bit_length=256)
        wrapped = self._provider.wrap(data_key, wrap_aad(tenant, version))
        sealed = None if dictionary is None else seal(AESGCM(data_key), dictionary, dictionary_aad(tenant, version))
        return WrappedKey(tenant, version, wrapped, self._provider.key_id, int(time.time() * 1000), dictionary=sealed)

    async def cipher(self, tenant: str, need: Iterable[int] = ()) -> TenantCipher:
        """The tenant's cipher; ``need`` names key versions the caller must open.

        A cached cipher that lacks one of them is reloaded: another process
        rotated the key and already wrote under the new version.
        """
        cached = self._cache.get(tenant)
        if cached is not None and cached.has(need):
            self.stats.hits += 1
            return cached
        self.stats.misses += 1
        forgets = self._forgets
        wrapped = await self._store.tenant_keys(tenant)
        usable = [k for k in wrapped if k.state != "destroyed"]
        if not usable:
            raise TenantNotFound(tenant)
        raw = {k.version: self._provider.unwrap(k.wrapped, wrap_aad(tenant, k.version)) for k in usable}
        keys = {v: AESGCM(key) for v, key in raw.items()}
        active = [k.version for k in usable if k.state == "active"] or list(keys)
        dictionaries = {k.version: d for k in usable if (d := _open_dictionary(tenant, k, keys[k.version]))}
        cipher = TenantCipher(tenant, keys, max(active), {v: _mac_key(key) for v, key in raw.items()}, dictionaries)
        if forgets == self._forgets:
            # Not if a rotation or an erasure forgot keys while these were read: they may be the ones it replaced
            # or destroyed, and cached they would be used for a whole TTL (a reader already in flight may still
            # use them once, as it would have had it begun a moment earlier).
            self._cache[tenant] = cipher
        return cipher

    def forget(self, tenant: str | None = None) -> None:
        """Drop cached keys (after a rotation or erasure), and keep loads already reading keys from caching them."""
        self._forgets += 1
        if tenant is None:
            self._cache.clear()
        else:
            self._cache.pop(tenant, None)
