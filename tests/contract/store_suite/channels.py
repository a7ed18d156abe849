"""The ChannelStore contract, on every backend: channel rows, scoped pulls, evictions, scoped conflicts."""

from __future__ import annotations

import pytest

from syncstore import ChannelStore, ConflictFilter, MembershipRecord, PushBatch, Store
from tests.contract import factories
from tests.contract.factories import change, conflict, entity, replica


def access(store: Store) -> ChannelStore:
    assert isinstance(store, ChannelStore), f"{type(store).__name__} must implement ChannelStore"
    return store


def member(
    entity_id: str, channel: str, seq: int, joined: int | None = None, *, left: bool = False
) -> MembershipRecord:
    return MembershipRecord("deliveries", entity_id, channel, seq, seq if joined is None else joined, not left)


async def write(store: Store, tenant: str, seq: int, entity_id: str, rows: list[MembershipRecord]) -> None:
    """One change at ``seq`` to ``entity_id``, with its channel rows."""
    async with store.push_session(tenant) as session:
        await session.commit(
            PushBatch(
                last_seq=seq,
                changes=[change(seq, entity_id)],
                entities=[entity(entity_id, seq)],
                replicas=[replica(hwm=seq)],
                memberships=rows,
            )
        )


async def test_commit_writes_channel_rows_and_the_session_reads_members(store: Store, tenant: str) -> None:
    await write(store, tenant, 1, "dlv-1", [member("dlv-1", "driver:a", 1), member("dlv-1", "depot:n", 1)])
    await write(
        store, tenant, 2, "dlv-1", [member("dlv-1", "driver:a", 2, 1, left=True), member("dlv-1", "depot:n", 2, 1)]
    )

    async with store.push_session(tenant) as session:
        members = await session.channel_members([("deliveries", "dlv-1"), ("deliveries", "unknown")])
    assert members == {("deliveries", "dlv-1"): {"depot:n": 1}}
    assert await access(store).entity_channels(tenant, "deliveries", "dlv-1") == {"depot:n": 1}
    assert await access(store).entity_channels(tenant, "deliveries", "unknown") == {}


async def test_pull_in_channels_returns_members_once_in_seq_order(store: Store, tenant: str) -> None:
    await write(store, tenant, 1, "dlv-1", [member("dlv-1", "driver:a", 1), member("dlv-1", "depot:n", 1)])
    await write(store, tenant, 2, "dlv-2", [member("dlv-2", "driver:b", 2)])
    await write(store, tenant, 3, "dlv-3", [member("dlv-3", "depot:n", 3)])
    await write(store, tenant, 4, "dlv-1", [member("dlv-1", "driver:a", 4, 1), member("dlv-1", "depot:n", 4, 3)])
    s = access(store)

    page = await s.pull_in_channels(tenant, ["driver:a", "depot:n"], 0, 10)
    assert [(p.record.entity_id, p.record.seq, p.joined_seq) for p in page] == [("dlv-3", 3, 3), ("dlv-1", 4, 1)]
    assert [p.record.entity_id for p in await s.pull_in_channels(tenant, ["driver:b"], 0, 10)] == ["dlv-2"]
    assert [p.record.entity_id for p in await s.pull_in_channels(tenant, ["depot:n"], 3, 10)] == ["dlv-1"]
    assert [p.record.entity_id for p in await s.pull_in_channels(tenant, ["driver:a", "depot:n"], 0, 1)] == ["dlv-3"]
    assert await s.pull_in_channels(tenant, [], 0, 10) == []
    assert await s.pull_in_channels(tenant, ["driver:a"], 0, 10, collections=["other"]) == []
    assert len(await s.pull_in_channels(tenant, ["driver:a"], 0, 10, collections=["deliveries"])) == 1


async def test_evictions_list_entities_that_left_and_are_not_visible_otherwise(store: Store, tenant: str) -> None:
    await write(store, tenant, 1, "dlv-1", [member("dlv-1", "driver:a", 1), member("dlv-1", "depot:n", 1)])
    await write(store, tenant, 2, "dlv-2", [member("dlv-2", "driver:a", 2)])
    # dlv-1 moves from driver a to driver b but stays in depot n; dlv-2 moves away entirely.
    await write(
        store,
        tenant,
        3,
        "dlv-1",
        [
            member("dlv-1", "driver:a", 3, 1, left=True),
            member("dlv-1", "driver:b", 3),
            member("dlv-1", "depot:n", 3, 1),
        ],
    )
    await write(
        store, tenant, 4, "dlv-2", [member("dlv-2", "driver:a", 4, 2, left=True), member("dlv-2", "driver:c", 4)]
    )
    s = access(store)

    gone = await s.evictions(tenant, ["driver:a"], 0, 10)
    assert [(e.entity_id, e.seq) for e in gone] == [("dlv-1", 3), ("dlv-2", 4)]
    assert [e.entity_id for e in await s.evictions(tenant, ["driver:a", "depot:n"], 0, 10)] == ["dlv-2"]
    assert [e.entity_id for e in await s.evictions(tenant, ["driver:a"], 3, 10)] == ["dlv-2"]
    assert [e.entity_id for e in await s.evictions(tenant, ["driver:a"], 0, 1)] == ["dlv-1"]
    assert await s.evictions(tenant, ["driver:b"], 0, 10) == []
    assert await s.evictions(tenant, ["driver:a"], 0, 10, collections=["other"]) == []


async def test_conflicts_in_channels_only_shows_visible_entities(store: Store, tenant: str) -> None:
    async with store.push_session(tenant) as session:
        await session.commit(
            PushBatch(
                last_seq=2,
                changes=[change(1, "dlv-1"), change(2, "dlv-2")],
                entities=[entity("dlv-1", 1), entity("dlv-2", 2)],
                conflicts=[conflict(1, 0, entity_id="dlv-1"), conflict(2, 0, entity_id="dlv-2", kind="register")],
                replicas=[replica(hwm=2)],
                memberships=[member("dlv-1", "driver:a", 1), member("dlv-2", "driver:b", 2)],
            )
        )
    s = access(store)
    assert [c.entity_id for c in await s.conflicts_in_channels(tenant, ["driver:a"], None, 10)] == ["dlv-1"]
    both = await s.conflicts_in_channels(tenant, ["driver:a", "driver:b"], None, 10)
    assert [c.entity_id for c in both] == ["dlv-1", "dlv-2"]
    assert [c.entity_id for c in await s.conflicts_in_channels(tenant, ["driver:a", "driver:b"], (1, 0), 10)] == [
        "dlv-2"
    ]
    filtered = await s.conflicts_in_channels(
        tenant, ["driver:a", "driver:b"], None, 10, ConflictFilter(kind="register")
    )
    assert [c.entity_id for c in filtered] == ["dlv-2"]
    one = ConflictFilter(collection="deliveries", entity_id="dlv-2")
    assert [c.entity_id for c in await s.conflicts_in_channels(tenant, ["driver:b"], None, 10, one)] == ["dlv-2"]
    assert await s.conflicts_in_channels(tenant, ["driver:a"], None, 10, one) == []  # not in driver a's channels
    assert await s.conflicts_in_channels(tenant, ["driver:b"], (2, 0), 10, one) == []
    assert await s.conflicts_in_channels(tenant, [], None, 10) == []


async def test_scoped_conflict_pages_list_exactly_the_visible_conflicts_in_order(
    store: Store, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every page of every reader, sparse (a quarter of the entities) or dense, filtered or not, read to the end:
    exactly its visible conflicts in log order. On SQL stores with a window of 3 log rows, so that the pages come
    from the window, from the window that reached the end of the log, and from the channels' side."""
    monkeypatch.setattr("syncstore.sql_channels.CONFLICT_WINDOW", 3)
    ids = [f"dlv-{i}" for i in range(12)]
    channel = {e: "driver:a" if i % 4 == 0 else "driver:b" for i, e in enumerate(ids)}
    logged = [
        conflict(i + 1, idx, entity_id=e, status="open" if (i + idx) % 3 else "resolved")
        for i, e in enumerate(ids)
        for idx in range(1 + i % 2)
    ]
    async with store.push_session(tenant) as session:
        await session.commit(
            PushBatch(
                last_seq=len(ids),
                changes=[change(i + 1, e) for i, e in enumerate(ids)],
                entities=[entity(e, i + 1) for i, e in enumerate(ids)],
                conflicts=logged,
                replicas=[replica(hwm=len(ids))],
                memberships=[member(e, channel[e], i + 1) for i, e in enumerate(ids)],
            )
        )
    s = access(store)
    for channels in (["driver:a"], ["driver:b"], ["driver:a", "driver:b"], ["driver:c"]):
        for filters in (None, ConflictFilter(status="open")):
            expected = [
                (c.seq, c.idx)
                for c in logged
                if channel[c.entity_id] in channels and (filters is None or c.status == filters.status)
            ]
            for size in (1, 2, 5):
                seen: list[tuple[int, int]] = []
                after = None
                while page := await s.conflicts_in_channels(tenant, channels, after, size, filters):
                    assert len(page) <= size
                    seen += [(c.seq, c.idx) for c in page]
                    after = seen[-1]
                assert seen == expected, (channels, filters, size)


async def test_set_entity_channels_is_compare_and_set_on_the_entity_seq(store: Store, tenant: str) -> None:
    await write(store, tenant, 1, "dlv-1", [member("dlv-1", "driver:a", 1)])
    s = access(store)

    assert not await s.set_entity_channels(tenant, "deliveries", "dlv-1", 7, ["driver:b"])
    assert not await s.set_entity_channels(tenant, "deliveries", "nope", 1, ["driver:b"])
    assert await s.entity_channels(tenant, "deliveries", "dlv-1") == {"driver:a": 1}

    assert await s.set_entity_channels(tenant, "deliveries", "dlv-1", 1, ["driver:b", "depot:n"])
    assert await s.entity_channels(tenant, "deliveries", "dlv-1") == {"driver:b": 1, "depot:n": 1}
    assert [e.entity_id for e in await s.evictions(tenant, ["driver:a"], 0, 10)] == ["dlv-1"]
    # Joining a channel it had left revives the row.
    assert await s.set_entity_channels(tenant, "deliveries", "dlv-1", 1, ["driver:a"])
    assert await s.entity_channels(tenant, "deliveries", "dlv-1") == {"driver:a": 1}
    assert await s.evictions(tenant, ["driver:a"], 0, 10) == []


async def test_purge_drops_old_evictions_and_rows_of_collected_entities(store: Store, tenant: str) -> None:
    await write(store, tenant, 1, "dlv-1", [member("dlv-1", "driver:a", 1)])
    await write(store, tenant, 2, "dlv-2", [member("dlv-2", "driver:a", 2)])
    await write(store, tenant, 3, "dlv-2", [member("dlv-2", "driver:a", 3, 2, left=True), member("dlv-2", "x", 3)])
    async with store.push_session(tenant) as session:
        await session.commit(
            PushBatch(
                last_seq=4,
                changes=[change(4, "dlv-1")],
                entities=[entity("dlv-1", 4, deleted=True, updated_at=factories.NOW)],
                replicas=[replica(hwm=4)],
                memberships=[member("dlv-1", "driver:a", 4, 1)],
            )
        )
    assert await store.purge_tombstones(tenant, factories.NOW + 1) == 1

    s = access(store)
    assert await s.entity_channels(tenant, "deliveries", "dlv-1") == {}
    # The eviction at seq 3 is below purged_seq (4): any cursor that old gets a reset instead.
    assert await s.evictions(tenant, ["driver:a"], 0, 10) == []
    assert await s.entity_channels(tenant, "deliveries", "dlv-2") == {"x": 3}


async def test_channel_rows_never_cross_tenants(store: Store, tenant: str) -> None:
    other = factories.new_tenant_id()
    await store.create_tenant(other, factories.key(other), factories.NOW)
    await write(store, tenant, 1, "dlv-1", [member("dlv-1", "driver:a", 1)])
    await write(store, other, 1, "dlv-9", [member("dlv-9", "driver:a", 1, left=True)])
    s = access(store)
    assert [p.record.entity_id for p in await s.pull_in_channels(tenant, ["driver:a"], 0, 10)] == ["dlv-1"]
    assert await s.pull_in_channels(other, ["driver:a"], 0, 10) == []
    assert await s.evictions(tenant, ["driver:a"], 0, 10) == []
    assert await s.entity_channels(other, "deliveries", "dlv-1") == {}


async def test_scoped_page_reads_the_tenant_row_the_page_and_the_evictions_together(store: Store, tenant: str) -> None:
    await write(store, tenant, 1, "dlv-1", [member("dlv-1", "driver:a", 1)])
    await write(store, tenant, 2, "dlv-2", [member("dlv-2", "driver:a", 2)])
    await write(
        store, tenant, 3, "dlv-1", [member("dlv-1", "driver:a", 3, 1, left=True), member("dlv-1", "driver:b", 3)]
    )
    await write(store, tenant, 4, "dlv-3", [member("dlv-3", "driver:a", 4)])
    s = access(store)

    for after, limit, collections in [(0, 10, None), (1, 10, None), (2, 1, None), (0, 10, ["deliveries"]), (0, 10, [])]:
        page = await s.scoped_page(tenant, ["driver:a"], after, limit, collections)
        assert page.tenant == await store.get_tenant(tenant)
        assert page.entities == await s.pull_in_channels(tenant, ["driver:a"], after, limit, collections)
        assert page.evictions == await s.evictions(tenant, ["driver:a"], after, limit, collections)
    page = await s.scoped_page(tenant, ["driver:a"], 0, 10)
    assert page.tenant is not None
    assert page.tenant.last_seq == 4
    assert [(e.record.entity_id, e.joined_seq) for e in page.entities] == [("dlv-2", 2), ("dlv-3", 4)]
    assert [(e.entity_id, e.seq) for e in page.evictions] == [("dlv-1", 3)]

    without = await s.scoped_page(tenant, ["driver:a"], 0, 10, evictions=False)
    assert (without.tenant, without.entities, without.evictions) == (page.tenant, page.entities, [])
    nothing = await s.scoped_page(tenant, [], 0, 10)
    assert (nothing.tenant, nothing.entities, nothing.evictions) == (page.tenant, [], [])
    unknown = await s.scoped_page("no-such-tenant", ["driver:a"], 0, 10)
    assert (unknown.tenant, unknown.entities, unknown.evictions) == (None, [], [])


async def test_evictions_carry_their_entitys_row_read_with_them(store: Store, tenant: str) -> None:
    """A pull confirms an eviction from the entity's own state: the row comes with it, from the same read."""
    await write(store, tenant, 1, "dlv-1", [member("dlv-1", "driver:a", 1)])
    await write(store, tenant, 2, "dlv-2", [member("dlv-2", "driver:a", 2)])
    await write(
        store, tenant, 3, "dlv-1", [member("dlv-1", "driver:a", 3, 1, left=True), member("dlv-1", "driver:b", 3)]
    )
    s = access(store)
    page = await s.scoped_page(tenant, ["driver:a"], 1, 10)
    assert [(e.entity_id, e.seq) for e in page.evictions] == [("dlv-1", 3)]
    row = page.evictions[0].record
    assert row is not None
    assert row == await store.get_entity(tenant, "deliveries", "dlv-1")
    assert (row.seq, row.latest_seq) == (3, 3)
    assert await s.evictions(tenant, ["driver:a"], 1, 10) == page.evictions
    # Without evictions nothing more is read.
    assert (await s.scoped_page(tenant, ["driver:a"], 3, 10)).evictions == []


async def test_latest_in_channels_is_the_newest_row_of_each_channel_after_a_seq(store: Store, tenant: str) -> None:
    await write(store, tenant, 1, "dlv-1", [member("dlv-1", "driver:a", 1), member("dlv-1", "depot:n", 1)])
    await write(store, tenant, 2, "dlv-2", [member("dlv-2", "driver:b", 2)])
    await write(store, tenant, 3, "dlv-1", [member("dlv-1", "driver:a", 3, 1), member("dlv-1", "depot:n", 3, 1)])
    # dlv-2 leaves driver b at 4: the row that makes the eviction counts too.
    await write(
        store, tenant, 4, "dlv-2", [member("dlv-2", "driver:b", 4, 2, left=True), member("dlv-2", "driver:c", 4)]
    )
    s = access(store)

    everything = ["driver:a", "driver:b", "driver:c", "depot:n", "driver:nobody"]
    assert await s.latest_in_channels(tenant, everything, 0) == {
        "driver:a": 3,
        "depot:n": 3,
        "driver:b": 4,
        "driver:c": 4,
    }
    assert await s.latest_in_channels(tenant, everything, 3) == {"driver:b": 4, "driver:c": 4}
    assert await s.latest_in_channels(tenant, everything, 4) == {}
    assert await s.latest_in_channels(tenant, ["driver:a"], 0) == {"driver:a": 3}
    assert await s.latest_in_channels(tenant, [], 0) == {}
    assert await s.latest_in_channels("no-such-tenant", everything, 0) == {}
    many = [f"driver:{i}" for i in range(1200)] + ["driver:c"]  # more than one chunk of IN (...)
    assert await s.latest_in_channels(tenant, many, 0) == {"driver:c": 4}
