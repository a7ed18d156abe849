"""The IntegrityStore contract, on every backend: the chain's columns, its head, checkpoints, verification runs."""

from __future__ import annotations

import msgspec

from syncstore import CheckpointRecord, IntegrityStore, MembershipRecord, PushBatch, Store, VerificationRecord
from tests.contract.factories import change, entity, replica


def integrity(store: Store) -> IntegrityStore:
    assert isinstance(store, IntegrityStore), f"{type(store).__name__} must implement IntegrityStore"
    return store


def link(seq: int) -> bytes:
    return seq.to_bytes(32, "big")


async def commit(store: Store, tenant: str, seq: int, entity_id: str, **extra: object) -> None:
    async with store.push_session(tenant) as session:
        batch = PushBatch(
            last_seq=seq,
            changes=[msgspec.structs.replace(change(seq, entity_id, n=seq), chain=link(seq))],
            entities=[msgspec.structs.replace(entity(entity_id, seq), chain=link(seq))],
            replicas=[replica(hwm=seq)],
            chain_head=link(seq),
            **extra,  # type: ignore[arg-type]
        )
        await session.commit(batch)


async def test_the_chain_head_is_kept_with_last_seq_and_read_under_the_lock(store: Store, tenant: str) -> None:
    async with store.push_session(tenant) as session:
        assert session.chain_head is None
    await commit(store, tenant, 1, "dlv-1")
    await commit(store, tenant, 2, "dlv-2")
    async with store.push_session(tenant) as session:
        assert (session.last_seq, session.chain_head) == (2, link(2))
    record = await store.get_tenant(tenant)
    assert record is not None
    assert record.chain_head == link(2)
    # A batch without a new head (nothing applied) keeps the stored one.
    async with store.push_session(tenant) as session:
        await session.commit(PushBatch(last_seq=2, replicas=[replica(hwm=3)]))
    async with store.push_session(tenant) as session:
        assert session.chain_head == link(2)
    logged = await store.changes(tenant, 0, 10)
    assert [c.chain for c in logged] == [link(1), link(2)]
    got = await store.get_entity(tenant, "deliveries", "dlv-2")
    assert got is not None
    assert got.chain == link(2)


async def test_every_read_of_an_entity_row_brings_its_latest_change_seq(store: Store, tenant: str) -> None:
    await commit(store, tenant, 1, "dlv-1")
    await commit(store, tenant, 2, "dlv-2")
    await commit(store, tenant, 3, "dlv-1")
    got = await store.get_entity(tenant, "deliveries", "dlv-1")
    assert got is not None
    assert (got.seq, got.latest_seq) == (3, 3)
    assert [(e.entity_id, e.latest_seq) for e in await store.pull(tenant, 0, 10)] == [("dlv-2", 2), ("dlv-1", 3)]
    async with store.push_session(tenant) as session:
        loaded = await session.entities([("deliveries", "dlv-1"), ("deliveries", "dlv-2")])
    assert {k: e.latest_seq for k, e in loaded.items()} == {("deliveries", "dlv-1"): 3, ("deliveries", "dlv-2"): 2}
    # The field is read from the change log, never stored: a row written with another value reads back the log's.
    async with store.push_session(tenant) as session:
        odd = msgspec.structs.replace(entity("dlv-2", 2), chain=link(2), latest_seq=99)
        await session.commit(PushBatch(last_seq=3, entities=[odd], replicas=[replica(hwm=3)]))
    again = await store.get_entity(tenant, "deliveries", "dlv-2")
    assert again is not None
    assert again.latest_seq == 2
    # A row without any change in the log reads None.
    async with store.push_session(tenant) as session:
        await session.commit(PushBatch(last_seq=3, entities=[entity("orphan", 3)], replicas=[replica(hwm=3)]))
    orphan = await store.get_entity(tenant, "deliveries", "orphan")
    assert orphan is not None
    assert orphan.latest_seq is None


async def test_member_channels_reads_current_memberships_only(store: Store, tenant: str) -> None:
    rows = [
        MembershipRecord("deliveries", "dlv-1", "driver:a", 1, 1, True),
        MembershipRecord("deliveries", "dlv-1", "driver:b", 1, 1, False),
        MembershipRecord("deliveries", "dlv-1", "depot:n", 1, 1, True),
    ]
    await commit(store, tenant, 1, "dlv-1", memberships=rows)
    keys = [("deliveries", "dlv-1"), ("deliveries", "dlv-2")]
    assert await integrity(store).member_channels(tenant, keys) == {("deliveries", "dlv-1"): {"driver:a", "depot:n"}}


async def test_checkpoints_are_written_with_the_batch_and_paged_in_seq_order(store: Store, tenant: str) -> None:
    for seq in (1, 2, 3):
        mark = CheckpointRecord(seq=seq, head=link(seq), key_version=1, mac=b"m" * 32, created_at=seq)
        await commit(store, tenant, seq, f"dlv-{seq}", checkpoints=[mark] if seq != 2 else [])
    marks = await integrity(store).checkpoints(tenant, 0, 10)
    assert [(m.seq, m.head) for m in marks] == [(1, link(1)), (3, link(3))]
    assert [m.seq for m in await integrity(store).checkpoints(tenant, 1, 10)] == [3]
    assert await integrity(store).checkpoints(tenant, 0, 0) == []


async def test_verification_runs_are_kept_newest_first(store: Store, tenant: str) -> None:
    for started in (10, 30, 20):
        run = VerificationRecord(started, started + 1, 0, 5, 5, 2, "[]" if started != 30 else '[{"kind":"link"}]')
        await integrity(store).record_verification(tenant, run)
    runs = await integrity(store).verifications(tenant, 2)
    assert [(r.started_at, r.problems) for r in runs] == [(30, '[{"kind":"link"}]'), (20, "[]")]
    assert await integrity(store).verifications("no-such-tenant", 5) == []


async def test_purging_a_tombstone_records_where_the_entitys_next_life_starts(store: Store, tenant: str) -> None:
    """``repair`` replays an entity's changes after its latest purged tombstone (the log cannot tell it)."""
    assert await integrity(store).purged(tenant, "deliveries", "dlv-1") == (0, 0)
    await commit(store, tenant, 1, "dlv-1")
    async with store.push_session(tenant) as session:
        tomb = msgspec.structs.replace(entity("dlv-1", 2), deleted=True, updated_at=5)
        await session.commit(PushBatch(last_seq=2, changes=[change(2, "dlv-1", n=2)], entities=[tomb]))
    await commit(store, tenant, 3, "dlv-2")
    assert await store.purge_tombstones(tenant, 10) == 1
    assert await integrity(store).purged(tenant, "deliveries", "dlv-1") == (2, 0)
    assert await integrity(store).purged(tenant, "deliveries", "dlv-2") == (0, 0)
    # Written again, deleted again and purged again: the latest purge is the one that counts.
    async with store.push_session(tenant) as session:
        tomb = msgspec.structs.replace(entity("dlv-1", 4), deleted=True, updated_at=6)
        await session.commit(PushBatch(last_seq=4, changes=[change(4, "dlv-1", n=4)], entities=[tomb]))
    assert await store.purge_tombstones(tenant, 10) == 1
    assert await integrity(store).purged(tenant, "deliveries", "dlv-1") == (4, 0)
