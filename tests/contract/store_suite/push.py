"""Contract: push sessions write atomically, in seq order, without gaps."""

from __future__ import annotations

import msgspec
import pytest

from syncstore import DotRecord, FaultyStore, InjectedFault, MembershipRecord, PushBatch, Store
from tests.contract import factories
from tests.contract.factories import as_stored, change, conflict, dead_letter, entity, replica
from tests.contract.store_suite.admin import admin


def full_batch() -> PushBatch:
    """Two changes to one entity, one conflict, one dead letter, one replica."""
    return PushBatch(
        last_seq=2,
        changes=[change(1, "dlv-1", n=1), change(2, "dlv-1", n=2)],
        entities=[entity("dlv-1", 2, vv={"phone": 2, "tablet": 5})],
        conflicts=[conflict(2, 0)],
        dead_letters=[dead_letter(3)],
        replicas=[replica("phone", hwm=3)],
    )


async def last_seq(store: Store, tenant: str) -> int:
    record = await store.get_tenant(tenant)
    assert record is not None
    return record.last_seq


async def assert_untouched(store: Store, tenant: str) -> None:
    assert await last_seq(store, tenant) == 0
    assert await store.pull(tenant, 0, 100) == []
    assert await store.changes(tenant, 0, 100) == []
    assert await store.conflicts(tenant, None, 100) == []
    assert await store.dead_letters(tenant, 100) == []
    async with store.push_session(tenant) as session:
        assert await session.replicas(["phone"]) == {}
        assert await session.dot_change_id("phone", 1) is None


async def test_session_starts_at_the_tenants_last_seq(store: Store, tenant: str) -> None:
    async with store.push_session(tenant) as session:
        assert session.last_seq == 0
        await session.commit(factories.changes_batch(1, 3))

    async with store.push_session(tenant) as session:
        assert session.last_seq == 3


async def test_commit_writes_every_row_and_last_seq(store: Store, tenant: str) -> None:
    batch = full_batch()
    async with store.push_session(tenant) as session:
        await session.commit(batch)

    assert await last_seq(store, tenant) == 2
    assert await store.changes(tenant, 0, 100) == batch.changes
    assert as_stored(await store.pull(tenant, 0, 100)) == batch.entities
    assert as_stored(await store.get_entity(tenant, "deliveries", "dlv-1")) == batch.entities[0]
    assert await store.conflicts(tenant, None, 100) == batch.conflicts
    assert await store.get_conflict(tenant, 2, 0) == batch.conflicts[0]
    assert await store.dead_letters(tenant, 100) == batch.dead_letters
    async with store.push_session(tenant) as session:
        assert await session.replicas(["phone", "unknown"]) == {"phone": replica("phone", hwm=3)}
        loaded = await session.entities([("deliveries", "dlv-1")])
        assert {k: as_stored(v) for k, v in loaded.items()} == {("deliveries", "dlv-1"): batch.entities[0]}


async def test_commit_of_only_dead_letters_keeps_last_seq(store: Store, tenant: str) -> None:
    async with store.push_session(tenant) as session:
        await session.commit(PushBatch(last_seq=0, dead_letters=[dead_letter(1)], replicas=[replica(hwm=1)]))

    assert await last_seq(store, tenant) == 0
    assert [d.n for d in await store.dead_letters(tenant, 10)] == [1]


async def test_exception_in_session_rolls_back_and_leaves_no_gap(store: Store, tenant: str) -> None:
    async def failing_push() -> None:
        async with store.push_session(tenant) as session:
            assert session.last_seq == 0
            raise RuntimeError("merge failed")

    with pytest.raises(RuntimeError, match="merge failed"):
        await failing_push()
    await assert_untouched(store, tenant)

    async with store.push_session(tenant) as session:
        assert session.last_seq == 0
        await session.commit(factories.changes_batch(1, 2))

    assert [c.seq for c in await store.changes(tenant, 0, 100)] == [1, 2]


async def test_exit_without_commit_writes_nothing(store: Store, tenant: str) -> None:
    async with store.push_session(tenant) as session:
        await session.entities([("deliveries", "dlv-1")])

    await assert_untouched(store, tenant)


async def test_commit_twice_is_an_error(store: Store, tenant: str) -> None:
    async with store.push_session(tenant) as session:
        await session.commit(factories.changes_batch(1, 1))
        with pytest.raises(RuntimeError, match="already committed"):
            await session.commit(factories.changes_batch(2, 1))

    assert await last_seq(store, tenant) == 1


@pytest.mark.parametrize(
    "batch",
    [
        pytest.param(PushBatch(last_seq=-1), id="last-seq-goes-back"),
        pytest.param(PushBatch(last_seq=1, changes=[change(2)]), id="change-above-last-seq"),
        pytest.param(PushBatch(last_seq=1, changes=[change(0)]), id="change-at-old-seq"),
        pytest.param(PushBatch(last_seq=2, changes=[change(1, n=1), change(1, n=2)]), id="duplicate-seq"),
        pytest.param(PushBatch(last_seq=2, changes=[change(1, n=5), change(2, n=5)]), id="duplicate-dot"),
        pytest.param(PushBatch(last_seq=1, entities=[entity("dlv-1", 2)]), id="entity-above-last-seq"),
        pytest.param(PushBatch(last_seq=0, dead_letters=[dead_letter(1), dead_letter(1)]), id="duplicate-dead-letter"),
    ],
)
async def test_invalid_batch_is_rejected_and_writes_nothing(store: Store, tenant: str, batch: PushBatch) -> None:
    async with store.push_session(tenant) as session:
        with pytest.raises(ValueError, match=r"batch|outside|seq"):
            await session.commit(batch)

    await assert_untouched(store, tenant)


async def test_batch_colliding_with_stored_dot_writes_nothing(store: Store, tenant: str) -> None:
    async with store.push_session(tenant) as session:
        await session.commit(PushBatch(last_seq=1, changes=[change(1, n=1)]))

    # seq 2 is free, but the dot (phone, 1) is taken; the entity and replica must not land either.
    clash = PushBatch(last_seq=2, changes=[change(2, n=1)], entities=[entity("dlv-9", 2)], replicas=[replica(hwm=9)])
    async with store.push_session(tenant) as session:
        with pytest.raises(ValueError, match="collides"):
            await session.commit(clash)

    assert await last_seq(store, tenant) == 1
    assert await store.get_entity(tenant, "deliveries", "dlv-9") is None
    async with store.push_session(tenant) as session:
        assert await session.replicas(["phone"]) == {}


@pytest.mark.parametrize(
    ("stored", "clash"),
    [
        pytest.param(
            PushBatch(last_seq=0, dead_letters=[dead_letter(4)]),
            PushBatch(last_seq=0, dead_letters=[dead_letter(4)]),
            id="dead-letter",
        ),
        pytest.param(
            PushBatch(last_seq=1, conflicts=[conflict(1)]),
            PushBatch(last_seq=1, conflicts=[conflict(1)]),
            id="conflict",
        ),
    ],
)
async def test_batch_colliding_with_stored_rows_is_rejected(
    store: Store, tenant: str, stored: PushBatch, clash: PushBatch
) -> None:
    async with store.push_session(tenant) as session:
        await session.commit(stored)

    async with store.push_session(tenant) as session:
        with pytest.raises(ValueError, match="collides"):
            await session.commit(clash)


async def test_replica_upsert_moves_the_high_water_mark(store: Store, tenant: str) -> None:
    async with store.push_session(tenant) as session:
        await session.commit(PushBatch(last_seq=0, replicas=[replica("phone", hwm=1), replica("tablet", hwm=4)]))
    async with store.push_session(tenant) as session:
        await session.commit(PushBatch(last_seq=0, replicas=[replica("phone", hwm=2)]))

    async with store.push_session(tenant) as session:
        assert await session.replicas(["phone", "tablet", "laptop"]) == {
            "phone": replica("phone", hwm=2),
            "tablet": replica("tablet", hwm=4),
        }


async def test_entity_upsert_replaces_the_row(store: Store, tenant: str) -> None:
    async with store.push_session(tenant) as session:
        await session.commit(PushBatch(last_seq=1, changes=[change(1)], entities=[entity("dlv-1", 1)]))
    replaced = entity("dlv-1", 2, deleted=True, state=b"tombstone", vv={"phone": 2, "x": 1}, updated_at=99)
    async with store.push_session(tenant) as session:
        await session.commit(PushBatch(last_seq=2, changes=[change(2)], entities=[replaced]))

    assert as_stored(await store.get_entity(tenant, "deliveries", "dlv-1")) == replaced
    assert as_stored(await store.pull(tenant, 0, 10)) == [replaced]


async def test_same_entity_twice_in_a_batch_keeps_the_last(store: Store, tenant: str) -> None:
    batch = PushBatch(last_seq=2, changes=[change(1), change(2)], entities=[entity("dlv-1", 1), entity("dlv-1", 2)])
    async with store.push_session(tenant) as session:
        await session.commit(batch)

    assert as_stored(await store.get_entity(tenant, "deliveries", "dlv-1")) == entity("dlv-1", 2)


async def test_session_lookups_skip_unknown_and_include_deleted(store: Store, tenant: str) -> None:
    rows = [entity("a", 1), entity("b", 2, deleted=True), entity("a", 3, collection="parcels")]
    async with store.push_session(tenant) as session:
        await session.commit(PushBatch(last_seq=3, entities=rows))

    async with store.push_session(tenant) as session:
        found = await session.entities([("deliveries", "a"), ("deliveries", "b"), ("parcels", "a"), ("parcels", "zz")])
        assert found == {("deliveries", "a"): rows[0], ("deliveries", "b"): rows[1], ("parcels", "a"): rows[2]}
        assert await session.entities([]) == {}
        assert await session.replicas([]) == {}


async def test_session_lookups_of_many_keys(store: Store, tenant: str) -> None:
    # More keys than one IN (...) chunk, across two collections.
    batch = factories.changes_batch(1, 700)
    more = factories.changes_batch(701, 600, collection="parcels", replica_id="tablet")
    async with store.push_session(tenant) as session:
        await session.commit(batch)
    async with store.push_session(tenant) as session:
        await session.commit(more)

    wanted = [(e.collection, e.entity_id) for e in batch.entities + more.entities]
    async with store.push_session(tenant) as session:
        found = await session.entities([*wanted, ("deliveries", "missing")])
        assert len(found) == 1300
        assert as_stored(found[("parcels", "e-1300")]) == more.entities[-1]
        assert await session.replicas(["phone", "tablet"]) == {
            "phone": replica("phone", hwm=700),
            "tablet": replica("tablet", hwm=1300),
        }
    assert await last_seq(store, tenant) == 1300


async def test_load_reads_replicas_entities_and_their_channels_at_once(store: Store, tenant: str) -> None:
    rows = [entity("a", 1), entity("b", 2, deleted=True), entity("c", 3)]
    members = [
        MembershipRecord("deliveries", "a", "driver:x", 1, 1, True),
        MembershipRecord("deliveries", "b", "driver:x", 2, 2, False),  # left: an eviction, not a member
        MembershipRecord("deliveries", "c", "depot:n", 3, 3, True),
    ]
    async with store.push_session(tenant) as session:
        await session.commit(
            PushBatch(last_seq=3, entities=rows, replicas=[replica("phone", hwm=3)], memberships=members)
        )

    keys = [("deliveries", "a"), ("deliveries", "b"), ("deliveries", "zz"), ("parcels", "a")]
    async with store.push_session(tenant) as session:
        loaded = await session.load(["phone", "tablet"], keys)
        assert loaded.replicas == await session.replicas(["phone", "tablet"])
        assert loaded.entities == await session.entities(keys)
        assert loaded.members == await session.channel_members(list(loaded.entities))
        assert set(loaded.replicas) == {"phone"}
        assert set(loaded.entities) == {("deliveries", "a"), ("deliveries", "b")}
        assert loaded.members == {("deliveries", "a"): {"driver:x": 1}}
        nothing = await session.load([], [])
        assert (nothing.replicas, nothing.entities, nothing.members) == ({}, {}, {})


async def test_dot_change_id_finds_changes_and_dead_letters(store: Store, tenant: str) -> None:
    async with store.push_session(tenant) as session:
        await session.commit(full_batch())

    async with store.push_session(tenant) as session:
        assert await session.dot_change_id("phone", 1) == "chg-phone-1"
        assert await session.dot_change_id("phone", 2) == "chg-phone-2"
        assert await session.dot_change_id("phone", 3) == "dead-phone-3"
        assert await session.dot_change_id("phone", 4) is None
        assert await session.dot_change_id("tablet", 1) is None


async def test_a_dot_says_whether_its_change_was_applied_or_refused(store: Store, tenant: str) -> None:
    """A replayed counter is answered as it was first (PROTOCOL §4.2): the dot tells an applied change from a
    dead-lettered one, with the refusal's code and message."""
    async with store.push_session(tenant) as session:
        await session.commit(full_batch())

    async with store.push_session(tenant) as session:
        assert await session.dot("phone", 1) == DotRecord("chg-phone-1")
        letter = await session.dot("phone", 3)
        assert letter is not None
        assert (letter.change_id, letter.code) == ("dead-phone-3", "schema_violation")
        assert letter.message == "unknown field 'colour'"
        assert await session.dot("phone", 4) is None
        assert await session.dot("tablet", 1) is None


CHANGE_IDS = (
    "6f1c2a4e-93b7-4d0a-8c2e-5b9f01d7e3a4",  # what both SDKs send (str(uuid.uuid4())): stored as 16 bytes
    "6f1c2a4e93b74d0a8c2e5b9f01d7e3a4",  # uuid.uuid4().hex: stored as 16 bytes
    "6F1C2A4E-93B7-4D0A-8C2E-5B9F01D7E3A4",  # not canonical: stored as text, read back as sent
    "{6f1c2a4e-93b7-4d0a-8c2e-5b9f01d7e3a4}",
    "6f1c2a4e-93b7-4d0a-8c2e-5b9f01d7e3ax",
    "x",
    "",  # never sent by a client (ids are not empty); stored as text all the same
    "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
)


async def test_every_form_of_change_id_reads_back_as_it_was_pushed(store: Store, tenant: str) -> None:
    """A change id that is a canonical UUID is packed into 16 bytes on SQL stores (ADR 0039); every id,
    packed or not, reads back the same through the log, the admin lookup and the dot check."""
    pushed = [
        msgspec.structs.replace(change(seq, f"dlv-{seq}", n=seq), change_id=cid)
        for seq, cid in enumerate(CHANGE_IDS, start=1)
    ]
    async with store.push_session(tenant) as session:
        await session.commit(PushBatch(last_seq=len(pushed), changes=pushed))

    assert await store.changes(tenant, 0, 100) == pushed
    async with store.push_session(tenant) as session:
        for c in pushed:
            assert await session.dot_change_id(c.replica_id, c.n) == c.change_id
    for c in pushed:
        assert await admin(store).change_at(tenant, c.replica_id, c.n) == c


async def test_faulty_commit_writes_nothing(store: Store, tenant: str) -> None:
    faulty = FaultyStore(store)
    faulty.fail_next_commit()

    with pytest.raises(InjectedFault):
        async with faulty.push_session(tenant) as session:
            await session.commit(full_batch())
    await assert_untouched(store, tenant)

    async with faulty.push_session(tenant) as session:
        await session.commit(full_batch())
    assert await last_seq(store, tenant) == 2


async def test_faulty_commit_after_write_loses_only_the_answer(store: Store, tenant: str) -> None:
    faulty = FaultyStore(store)
    faulty.fail_next_commit(ConnectionResetError("ack lost"), after_write=True)

    with pytest.raises(ConnectionResetError):
        async with faulty.push_session(tenant) as session:
            await session.commit(full_batch())

    assert await faulty.get_tenant(tenant) == await store.get_tenant(tenant)
    assert await last_seq(store, tenant) == 2
    async with faulty.push_session(tenant) as session:
        assert session.last_seq == 2
        assert await session.dot_change_id("phone", 1) == "chg-phone-1"
