"""Contract: tenants never see each other, and sessions on one tenant take turns."""

from __future__ import annotations

import asyncio

from syncstore import ConflictFilter, PushBatch, Store
from tests.contract import factories
from tests.contract.factories import NOW, change, conflict, dead_letter, entity, replica


def busy_batch(first_seq: int = 1) -> PushBatch:
    s = first_seq
    return PushBatch(
        last_seq=s + 1,
        changes=[change(s, "dlv-1", n=s), change(s + 1, "dlv-2", n=s + 1)],
        entities=[entity("dlv-1", s, deleted=True, updated_at=1), entity("dlv-2", s + 1)],
        conflicts=[conflict(s + 1)],
        dead_letters=[dead_letter(s + 2)],
        replicas=[replica("phone", hwm=s + 2)],
    )


async def test_tenant_never_sees_another_tenants_rows(store: Store) -> None:
    a, b = factories.new_tenant_id(), factories.new_tenant_id()
    await store.create_tenant(a, factories.key(a), NOW)
    await store.create_tenant(b, factories.key(b), NOW)
    async with store.push_session(a) as session:
        await session.commit(busy_batch())

    assert await store.pull(b, 0, 100) == []
    assert await store.pull(b, 0, 100, ["deliveries"]) == []
    assert await store.get_entity(b, "deliveries", "dlv-1") is None
    assert await store.changes(b, 0, 100) == []
    assert await store.changes(b, 0, 100, collection="deliveries", entity_id="dlv-1") == []
    assert await store.conflicts(b, None, 100) == []
    assert await store.conflicts(b, None, 100, ConflictFilter(entity_id="dlv-2")) == []
    assert await store.get_conflict(b, 2, 0) is None
    assert await store.dead_letters(b, 100) == []
    assert await store.tenant_keys(b) == [factories.key(b)]
    async with store.push_session(b) as session:
        assert session.last_seq == 0
        assert await session.replicas(["phone"]) == {}
        assert await session.entities([("deliveries", "dlv-1"), ("deliveries", "dlv-2")]) == {}
        assert await session.dot_change_id("phone", 1) is None
        assert await session.dot_change_id("phone", 3) is None
    assert await store.purge_tombstones(b, NOW) == 0
    record_a = await store.get_tenant(a)
    assert record_a is not None
    assert record_a.purged_seq == 0


async def test_same_ids_in_two_tenants_do_not_collide(store: Store) -> None:
    a, b = factories.new_tenant_id(), factories.new_tenant_id()
    for tenant in (a, b):
        await store.create_tenant(tenant, factories.key(tenant), NOW)
        async with store.push_session(tenant) as session:
            await session.commit(busy_batch())

    assert await store.purge_tombstones(a, NOW) == 1

    assert [e.entity_id for e in await store.pull(a, 0, 100)] == ["dlv-2"]
    assert [e.entity_id for e in await store.pull(b, 0, 100)] == ["dlv-1", "dlv-2"]
    record_b = await store.get_tenant(b)
    assert record_b is not None
    assert (record_b.last_seq, record_b.purged_seq) == (2, 0)


async def test_concurrent_sessions_on_one_tenant_take_turns(store: Store, tenant: str) -> None:
    writers, per_push = 6, 3
    inside: list[int] = []
    seen_last_seq: list[int] = []

    async def push(writer: int) -> None:
        async with store.push_session(tenant) as session:
            inside.append(writer)
            assert len(inside) == 1, "two sessions held the tenant lock at once"
            seen_last_seq.append(session.last_seq)
            # Yield to the loop (and let other tasks reach the lock) between read and write.
            await session.entities([("deliveries", "e-1")])
            await asyncio.sleep(0.01)
            batch = factories.changes_batch(session.last_seq + 1, per_push, replica_id=f"r{writer}")
            await session.commit(batch)
            inside.remove(writer)

    await asyncio.gather(*(push(w) for w in range(writers)))

    assert sorted(seen_last_seq) == [i * per_push for i in range(writers)]
    log = await store.changes(tenant, 0, 1000)
    assert [c.seq for c in log] == list(range(1, writers * per_push + 1))
    record = await store.get_tenant(tenant)
    assert record is not None
    assert record.last_seq == writers * per_push


async def test_purge_waits_for_a_running_session(store: Store, tenant: str) -> None:
    async with store.push_session(tenant) as session:
        await session.commit(PushBatch(last_seq=1, entities=[entity("a", 1, deleted=True, updated_at=1)]))

    order: list[str] = []
    inside = asyncio.Event()

    async def push() -> None:
        async with store.push_session(tenant) as session:
            order.append("push-start")
            inside.set()
            await asyncio.sleep(0.05)
            await session.commit(PushBatch(last_seq=2, entities=[entity("b", 2, deleted=True, updated_at=1)]))
            order.append("push-end")

    async def purge() -> None:
        await inside.wait()
        order.append("purge-start")
        order.append(f"purged-{await store.purge_tombstones(tenant, 10)}")

    await asyncio.gather(push(), purge())

    # Had purge not waited for the lock, it would have removed only "a" before the push ended.
    assert order == ["push-start", "purge-start", "push-end", "purged-2"]
