"""The KeyStore contract, on every backend: key versions, resumable reseal, erasure, export reads."""

from __future__ import annotations

import pytest
from msgspec.structs import replace

from syncstore import (
    SEALED_TABLES,
    AdminStore,
    AuditRecord,
    CheckpointRecord,
    KeyStore,
    MembershipRecord,
    PushBatch,
    Resealed,
    Store,
    TenantNotFound,
)
from syncstore.keystore import CHECKPOINTS, Remac
from tests.contract import factories
from tests.contract.factories import NOW, change, conflict, dead_letter, entity, replica


def keys(store: Store) -> KeyStore:
    assert isinstance(store, KeyStore), f"{type(store).__name__} must implement KeyStore"
    return store


async def seed(store: Store, tenant: str) -> PushBatch:
    """Rows in every sealed table, all under key version 1."""
    batch = PushBatch(
        last_seq=3,
        changes=[change(1, "dlv-1"), change(2, "dlv-2"), change(3, "dlv-1")],
        entities=[entity("dlv-1", 3), entity("dlv-2", 2)],
        conflicts=[conflict(3, 0), conflict(3, 1)],
        dead_letters=[dead_letter(4)],
        replicas=[replica(hwm=4)],
        memberships=[MembershipRecord("deliveries", "dlv-1", "driver:a", 3, 1, True)],
    )
    async with store.push_session(tenant) as session:
        await session.commit(batch)
    return batch


async def test_adding_a_key_retires_the_active_one(store: Store, tenant: str) -> None:
    await keys(store).add_tenant_key(factories.key(tenant, 2))
    assert [(k.version, k.state) for k in await store.tenant_keys(tenant)] == [(1, "retired"), (2, "active")]
    with pytest.raises(ValueError, match="already has key version 2"):
        await keys(store).add_tenant_key(factories.key(tenant, 2))
    assert [(k.version, k.state) for k in await store.tenant_keys(tenant)] == [(1, "retired"), (2, "active")]
    with pytest.raises(TenantNotFound):
        await keys(store).add_tenant_key(factories.key("no-such-tenant", 1))


async def test_rewrap_is_compare_and_set(store: Store, tenant: str) -> None:
    (key,) = await store.tenant_keys(tenant)
    assert await keys(store).rewrap_tenant_key(key, b"rewrapped", "mk-2")
    assert not await keys(store).rewrap_tenant_key(key, b"again", "mk-3")  # it no longer holds key.wrapped
    (after,) = await store.tenant_keys(tenant)
    assert (after.wrapped, after.master_key_id, after.version, after.state) == (b"rewrapped", "mk-2", 1, "active")


async def test_destroying_keys_overwrites_them(store: Store, tenant: str) -> None:
    await keys(store).add_tenant_key(factories.key(tenant, 2))
    assert await keys(store).destroy_tenant_keys(tenant, [1]) == 1
    assert [(k.version, k.state, k.wrapped) for k in await store.tenant_keys(tenant)] == [
        (1, "destroyed", b""),
        (2, "active", factories.key(tenant, 2).wrapped),
    ]
    assert await keys(store).destroy_tenant_keys(tenant) == 1
    assert await keys(store).destroy_tenant_keys(tenant) == 0
    assert {k.state for k in await store.tenant_keys(tenant)} == {"destroyed"}


async def test_a_key_versions_dictionary_is_kept_through_a_rewrap_and_destroyed_with_it(
    store: Store, tenant: str
) -> None:
    sealed = b"\x01" + bytes(range(256)) * 4  # stands for a dictionary sealed under version 2's key
    await keys(store).add_tenant_key(replace(factories.key(tenant, 2), dictionary=sealed))
    one, two = await store.tenant_keys(tenant)
    assert (one.dictionary, two.dictionary) == (None, sealed)
    assert await keys(store).rewrap_tenant_key(two, b"rewrapped", "mk-2")
    assert (await store.tenant_keys(tenant))[1].dictionary == sealed  # sealed under the data key, not the master
    assert await keys(store).destroy_tenant_keys(tenant, [2]) == 1
    assert [k.dictionary for k in await store.tenant_keys(tenant)] == [None, None]


async def test_sealed_rows_page_in_key_order_and_reseal_is_compare_and_set(store: Store, tenant: str) -> None:
    await seed(store, tenant)
    s = keys(store)
    assert await s.key_usage(tenant) == {
        "entities": {1: 2},
        "changes": {1: 3},
        "conflicts": {1: 2},
        "dead_letters": {1: 1},
        "chain_checkpoints": {},
    }

    first = await s.sealed_rows(tenant, "changes", not_version=2, after=None, limit=2)
    assert [r.key for r in first] == [(1,), (2,)]
    assert first[0].names == {"collection": "deliveries", "entity_id": "dlv-1", "seq": 1, "chain": None}
    rest = await s.sealed_rows(tenant, "changes", not_version=2, after=first[-1].key, limit=2)
    assert [r.key for r in rest] == [(3,)]
    assert await s.sealed_rows(tenant, "changes", not_version=1, after=None, limit=10) == []

    ents = await s.sealed_rows(tenant, "entities", not_version=2, after=None, limit=10)
    assert [r.key for r in ents] == [("deliveries", "dlv-1"), ("deliveries", "dlv-2")]
    assert ents[0].blob == b"state:dlv-1:3"
    conf = await s.sealed_rows(tenant, "conflicts", not_version=2, after=(3, 0), limit=10)
    assert [(r.key, r.names["idx"]) for r in conf] == [((3, 1), 1)]
    dead = await s.sealed_rows(tenant, "dead_letters", not_version=2, after=None, limit=10)
    assert dead[0].key == ("phone", 4)
    assert dead[0].names == {"replica_id": "phone", "n": 4, "change_id": "dead-phone-4"}

    stale = Resealed(ents[1].key, 1, b"not what is stored", 2, b"new-2")
    fresh = Resealed(ents[0].key, 1, ents[0].blob, 2, b"new-1")
    assert await s.reseal(tenant, "entities", [fresh, stale]) == 1
    assert await s.reseal(tenant, "entities", [fresh]) == 0  # already done: a rerun is harmless
    row = await store.get_entity(tenant, "deliveries", "dlv-1")
    assert row is not None
    assert (row.key_version, row.state, row.seq) == (2, b"new-1", 3)
    assert await s.key_usage(tenant) == {
        "entities": {1: 1, 2: 1},
        "changes": {1: 3},
        "conflicts": {1: 2},
        "dead_letters": {1: 1},
        "chain_checkpoints": {},
    }
    remaining = await s.sealed_rows(tenant, "entities", not_version=2, after=None, limit=10)
    assert [r.key for r in remaining] == [("deliveries", "dlv-2")]


async def test_every_sealed_table_can_be_resealed(store: Store, tenant: str) -> None:
    await seed(store, tenant)
    s = keys(store)
    for table in SEALED_TABLES:
        rows = await s.sealed_rows(tenant, table, not_version=2, after=None, limit=100)
        done = await s.reseal(tenant, table, [Resealed(r.key, 1, r.blob, 2, b"v2:" + r.blob) for r in rows])
        assert done == len(rows) > 0
    usage = await s.key_usage(tenant)
    assert all(set(versions) == {2} for table, versions in usage.items() if table in SEALED_TABLES)
    assert [c.payload for c in await store.changes(tenant, 0, 10)] == [b"v2:ops:1", b"v2:ops:2", b"v2:ops:3"]


async def test_erasing_a_tenant_deletes_all_its_rows_and_nothing_else(store: Store, tenant: str) -> None:
    other = factories.new_tenant_id()
    await store.create_tenant(other, factories.key(other), NOW)
    await seed(store, tenant)
    await seed(store, other)
    assert isinstance(store, AdminStore)
    await store.append_audit(AuditRecord(0, tenant, "ops", "tenant.erase", tenant, "{}", NOW))

    deleted = await keys(store).erase_tenant(tenant)
    assert deleted["tenants"] == 1
    assert deleted["entities"] == 2
    assert deleted["changes"] == 3
    assert deleted["entity_channels"] == 1
    assert await store.get_tenant(tenant) is None
    assert await store.tenant_keys(tenant) == []
    assert await store.changes(tenant, 0, 10) == []
    assert await store.pull(tenant, 0, 10) == []
    assert await keys(store).erase_tenant(tenant) == {}
    # The audit trail outlives the tenant; the other tenant is untouched.
    assert [a.action for a in await store.audit_log(tenant, None, 10)] == ["tenant.erase"]
    assert len(await store.changes(other, 0, 10)) == 3
    assert len(await store.tenant_keys(other)) == 1
    # The id can be used again.
    await store.create_tenant(tenant, factories.key(tenant), NOW)
    assert await store.pull(tenant, 0, 10) == []


async def test_changes_by_user(store: Store, tenant: str) -> None:
    async with store.push_session(tenant) as session:
        mine = [change(1, "dlv-1"), change(3, "dlv-2")]
        theirs = change(2, "dlv-1", replica_id="tablet", n=1)
        theirs = replace(theirs, user="user-2")
        await session.commit(PushBatch(last_seq=3, changes=[mine[0], theirs, mine[1]], replicas=[replica(hwm=3)]))
    s = keys(store)
    assert [c.seq for c in await s.changes_by_user(tenant, "user-1", 0, 10)] == [1, 3]
    assert [c.seq for c in await s.changes_by_user(tenant, "user-1", 1, 10)] == [3]
    assert [c.seq for c in await s.changes_by_user(tenant, "user-1", 0, 1)] == [1]
    assert [c.seq for c in await s.changes_by_user(tenant, "user-2", 0, 10)] == [2]
    assert await s.changes_by_user(tenant, "nobody", 0, 10) == []


async def test_checkpoints_count_under_their_key_version_and_are_remacd_compare_and_set(
    store: Store, tenant: str
) -> None:
    """Checkpoints are MAC'd under a key version: ``keys destroy`` must see them, ``reencrypt`` must move them."""
    await seed(store, tenant)
    for seq in (4, 5, 6):
        mark = CheckpointRecord(seq, bytes(32), 1, b"mac-%d" % seq, 0)
        async with store.push_session(tenant) as session:
            await session.commit(
                PushBatch(last_seq=seq, changes=[change(seq, "dlv-9", n=seq + 10)], checkpoints=[mark])
            )
    s = keys(store)
    assert (await s.key_usage(tenant))[CHECKPOINTS] == {1: 3}
    first = await s.checkpoint_macs(tenant, not_version=2, after=None, limit=2)
    assert [m.seq for m in first] == [4, 5]
    assert [m.seq for m in await s.checkpoint_macs(tenant, not_version=2, after=5, limit=2)] == [6]
    stale = Remac(5, 1, b"not what is stored", 2, b"new-5")
    fresh = Remac(4, 1, b"mac-4", 2, b"new-4")
    assert await s.remac_checkpoints(tenant, [fresh, stale]) == 1
    assert await s.remac_checkpoints(tenant, [fresh]) == 0  # already done: a rerun is harmless
    assert (await s.key_usage(tenant))[CHECKPOINTS] == {1: 2, 2: 1}
    assert [m.seq for m in await s.checkpoint_macs(tenant, not_version=2, after=None, limit=10)] == [5, 6]
    assert await s.checkpoint_macs(tenant, not_version=1, after=None, limit=10) == [
        CheckpointRecord(4, bytes(32), 2, b"new-4", 0)
    ]
