"""Contract: tenants and their keys."""

from __future__ import annotations

import asyncio

import pytest

from syncstore import FaultyStore, Store, StoreUnavailable, TenantExists, TenantNotFound, TenantRecord
from tests.contract import factories
from tests.contract.factories import NOW


async def test_create_tenant_starts_at_seq_zero(store: Store) -> None:
    tenant_id = factories.new_tenant_id()
    await store.create_tenant(tenant_id, factories.key(tenant_id), NOW)

    assert await store.get_tenant(tenant_id) == TenantRecord(id=tenant_id, created_at=NOW, last_seq=0, purged_seq=0)


async def test_get_unknown_tenant_is_none(store: Store) -> None:
    assert await store.get_tenant("nobody") is None


async def test_list_tenants_is_ordered_by_id(store: Store) -> None:
    ids = [factories.new_tenant_id() for _ in range(3)]
    for tenant_id in ids:
        await store.create_tenant(tenant_id, factories.key(tenant_id), NOW)

    listed = [t.id for t in await store.list_tenants()]

    # The PostgreSQL database is shared by the session: other tests' tenants may be listed too.
    assert set(ids) <= set(listed)
    assert listed == sorted(listed)


async def test_create_existing_tenant_raises_and_keeps_the_first(store: Store, tenant: str) -> None:
    with pytest.raises(TenantExists):
        await store.create_tenant(tenant, factories.key(tenant, version=7), NOW + 1)

    assert await store.tenant_keys(tenant) == [factories.key(tenant)]
    record = await store.get_tenant(tenant)
    assert record is not None
    assert record.created_at == NOW


async def test_create_tenant_rejects_another_tenants_key(store: Store) -> None:
    with pytest.raises(ValueError, match="key belongs"):
        await store.create_tenant("t-a", factories.key("t-b"), NOW)

    assert await store.get_tenant("t-a") is None


async def test_tenant_keys_lists_the_first_key(store: Store, tenant: str) -> None:
    keys = await store.tenant_keys(tenant)

    assert keys == [factories.key(tenant)]
    assert keys[0].wrapped == b"wrapped-\x01"


async def test_tenant_keys_of_unknown_tenant_is_empty(store: Store) -> None:
    assert await store.tenant_keys("nobody") == []


async def test_push_session_on_unknown_tenant_raises(store: Store) -> None:
    with pytest.raises(TenantNotFound):
        async with store.push_session("nobody"):
            pytest.fail("entered a session for a missing tenant")
    # ... and leaves nothing locked: the lookup that failed ran inside the session's transaction.
    tenant_id = factories.new_tenant_id()
    async with asyncio.timeout(5):
        await store.create_tenant(tenant_id, factories.key(tenant_id), NOW)
        async with store.push_session(tenant_id) as session:
            await session.commit(factories.changes_batch(1, 1))
    assert await store.get_tenant(tenant_id) == TenantRecord(id=tenant_id, created_at=NOW, last_seq=1, purged_seq=0)


async def test_purge_on_unknown_tenant_raises(store: Store) -> None:
    with pytest.raises(TenantNotFound):
        await store.purge_tombstones("nobody", NOW)


async def test_ping_succeeds_on_a_live_store(store: Store) -> None:
    """The probe answers on a live store and leaves it as it was; a store that is down raises instead."""
    tenant_id = factories.new_tenant_id()
    await store.create_tenant(tenant_id, factories.key(tenant_id), NOW)
    assert await store.ping() is None
    assert await store.get_tenant(tenant_id) == TenantRecord(id=tenant_id, created_at=NOW, last_seq=0, purged_seq=0)
    down = FaultyStore(store)
    down.fail_next_ping()
    with pytest.raises(StoreUnavailable):
        await down.ping()
    assert await down.ping() is None  # the outage was the probe's answer, not a broken store
