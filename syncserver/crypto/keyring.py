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

import time
from collections.abc import Iterable
from dataclasses import dataclass

from cachetools import TTLCache
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from syncserver.crypto.envelope import DecryptionError, open_sealed, row_aad, seal
from syncserver.crypto.keys import KeyProvider
from syncstore.base import Store, TenantNotFound
from syncstore.records import WrappedKey


def wrap_aad(tenant: str, version: int) -> bytes:
    return f"tenant-key/{tenant}/{version}".encode()


class TenantCipher:
    """Seals with the tenant's current key; opens any version it holds."""

    __slots__ = ("_keys", "current_version", "tenant")

    def __init__(self, tenant: str, keys: dict[int, AESGCM], current_version: int) -> None:
        self.tenant = tenant
        self._keys = keys
        self.current_version = current_version

    def __repr__(self) -> str:  # never show key material
        return f"TenantCipher(tenant={self.tenant!r}, versions={sorted(self._keys)})"

    def has(self, versions: Iterable[int]) -> bool:
        """Whether this cipher holds every one of these key versions."""
        return all(v in self._keys for v in versions)

    def seal(self, table: str, row: str, plaintext: bytes) -> tuple[int, bytes]:
        v = self.current_version
        return v, seal(self._keys[v], plaintext, row_aad(self.tenant, table, row, v))

    def open(self, table: str, row: str, key_version: int, blob: bytes) -> bytes:
        key = self._keys.get(key_version)
        if key is None:
            raise DecryptionError(f"key version {key_version} of this tenant is not available")
        return open_sealed(key, blob, row_aad(self.tenant, table, row, key_version))


@dataclass
class CacheStats:
    """Key-cache counters; they only grow (exported as Prometheus counters)."""

    hits: int = 0
    misses: int = 0


class TenantKeyring:
    """Hands out ``TenantCipher``s, unwrapping data keys through the ``KeyProvider``."""

    def __init__(self, store: Store, provider: KeyProvider, ttl_s: float = 300) -> None:
        self._store = store
        self._provider = provider
        self._cache: TTLCache[str, TenantCipher] = TTLCache(maxsize=10_000, ttl=ttl_s)
        self.stats = CacheStats()

    def new_key(self, tenant: str, version: int) -> WrappedKey:
        data_key = AESGCM.generate_key(bit_length=256)
        wrapped = self._provider.wrap(data_key, wrap_aad(tenant, version))
        return WrappedKey(tenant, version, wrapped, self._provider.key_id, int(time.time() * 1000))

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
        wrapped = await self._store.tenant_keys(tenant)
        usable = [k for k in wrapped if k.state != "destroyed"]
        if not usable:
            raise TenantNotFound(tenant)
        keys = {k.version: AESGCM(self._provider.unwrap(k.wrapped, wrap_aad(tenant, k.version))) for k in usable}
        active = [k.version for k in usable if k.state == "active"] or list(keys)
        cipher = TenantCipher(tenant, keys, max(active))
        self._cache[tenant] = cipher
        return cipher

    def forget(self, tenant: str | None = None) -> None:
        """Drop cached keys (after a rotation or erasure)."""
        if tenant is None:
            self._cache.clear()
        else:
            self._cache.pop(tenant, None)
