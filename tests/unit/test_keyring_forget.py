"""A key load that was reading when an erasure (or rotation) forgot the tenant's keys does not cache what it read."""

from __future__ import annotations

import asyncio

import pytest

from syncserver.keys.keyring import TenantKeyring
from syncserver.keys.providers import LocalKeyProvider
from syncstore import MemoryStore
from syncstore.records import WrappedKey
from syncstore.store import TenantNotFound


class SlowKeys(MemoryStore):
    """Hands out the keys as they were when asked, but only once released: a read in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = asyncio.Event()
        self.release = asyncio.Event()
        self.slow = False

    async def tenant_keys(self, tenant_id: str) -> list[WrappedKey]:
        keys = await super().tenant_keys(tenant_id)
        if self.slow:
            self.asked.set()
            await self.release.wait()
        return keys


async def test_keys_read_before_an_erasure_are_not_cached_after_it() -> None:
    store = SlowKeys()
    ring = TenantKeyring(store, LocalKeyProvider(b"\x03" * 32), ttl_s=300)
    await store.create_tenant("acme", ring.new_key("acme", 1), 0)
    store.slow = True
    loading = asyncio.ensure_future(ring.cipher("acme"))
    await store.asked.wait()  # the load has read the keys, still undestroyed

    assert await store.destroy_tenant_keys("acme") == 1  # the erasure: keys destroyed, then the cache forgotten
    ring.forget("acme")
    store.release.set()
    await loading  # the load already in flight still finishes with what it read

    store.slow = False
    with pytest.raises(TenantNotFound):
        await ring.cipher("acme")  # not served from a cache filled with the destroyed keys


async def test_a_load_with_no_forget_meanwhile_is_cached() -> None:
    store = SlowKeys()
    ring = TenantKeyring(store, LocalKeyProvider(b"\x03" * 32), ttl_s=300)
    await store.create_tenant("acme", ring.new_key("acme", 1), 0)
    first = await ring.cipher("acme")
    assert await ring.cipher("acme") is first
    assert (ring.stats.hits, ring.stats.misses) == (1, 1)
