"""Contract: pull, history, conflicts, dead letters and tombstone purge."""

from __future__ import annotations

from syncstore import ConflictFilter, ConflictRecord, PushBatch, Store
from tests.contract import factories
from tests.contract.factories import NOW, change, conflict, dead_letter, entity


async def commit(store: Store, tenant: str, batch: PushBatch) -> None:
    async with store.push_session(tenant) as session:
        await session.commit(batch)


async def test_pull_returns_entities_after_the_cursor_in_seq_order(store: Store, tenant: str) -> None:
    # Entities written out of key order; seq order must win.
    rows = [entity("zeta", 1), entity("alpha", 3), entity("mid", 2, collection="parcels"), entity("beta", 4)]
    await commit(store, tenant, PushBatch(last_seq=4, entities=rows))

    assert [e.seq for e in await store.pull(tenant, 0, 10)] == [1, 2, 3, 4]
    assert [e.entity_id for e in await store.pull(tenant, 2, 10)] == ["alpha", "beta"]
    assert await store.pull(tenant, 4, 10) == []


async def test_pull_limit_pages_through_everything(store: Store, tenant: str) -> None:
    await commit(store, tenant, factories.changes_batch(1, 7))

    pages, cursor = [], 0
    while page := await store.pull(tenant, cursor, 3):
        pages.append([e.seq for e in page])
        cursor = page[-1].seq

    assert pages == [[1, 2, 3], [4, 5, 6], [7]]
    assert await store.pull(tenant, 0, 0) == []


async def test_pull_filters_collections(store: Store, tenant: str) -> None:
    rows = [entity("a", 1), entity("b", 2, collection="parcels"), entity("c", 3, collection="notes")]
    await commit(store, tenant, PushBatch(last_seq=3, entities=rows))

    assert [e.entity_id for e in await store.pull(tenant, 0, 10, ["parcels", "notes"])] == ["b", "c"]
    assert [e.entity_id for e in await store.pull(tenant, 0, 10, ["deliveries"])] == ["a"]
    assert await store.pull(tenant, 0, 10, ["nothing"]) == []
    assert await store.pull(tenant, 0, 10, []) == []
    assert len(await store.pull(tenant, 0, 10, None)) == 3


async def test_pull_includes_tombstones(store: Store, tenant: str) -> None:
    await commit(store, tenant, PushBatch(last_seq=1, entities=[entity("gone", 1, deleted=True)]))

    assert [e.deleted for e in await store.pull(tenant, 0, 10)] == [True]


async def test_get_entity_of_unknown_key_is_none(store: Store, tenant: str) -> None:
    await commit(store, tenant, PushBatch(last_seq=1, entities=[entity("a", 1)]))

    assert await store.get_entity(tenant, "deliveries", "b") is None
    assert await store.get_entity(tenant, "parcels", "a") is None


async def test_changes_are_the_log_in_seq_order(store: Store, tenant: str) -> None:
    log = [change(1, "a"), change(2, "b"), change(3, "a"), change(4, "a", collection="parcels")]
    await commit(store, tenant, PushBatch(last_seq=4, changes=list(reversed(log))))

    assert await store.changes(tenant, 0, 10) == log
    assert await store.changes(tenant, 1, 2) == log[1:3]
    assert await store.changes(tenant, 0, 0) == []


async def test_changes_filtered_by_entity(store: Store, tenant: str) -> None:
    log = [change(1, "a"), change(2, "b"), change(3, "a"), change(4, "a", collection="parcels")]
    await commit(store, tenant, PushBatch(last_seq=4, changes=log))

    assert [c.seq for c in await store.changes(tenant, 0, 10, collection="deliveries", entity_id="a")] == [1, 3]
    assert [c.seq for c in await store.changes(tenant, 1, 10, collection="deliveries", entity_id="a")] == [3]
    assert [c.seq for c in await store.changes(tenant, 0, 1, collection="deliveries", entity_id="a")] == [1]
    assert [c.seq for c in await store.changes(tenant, 0, 10, collection="parcels")] == [4]
    assert [c.seq for c in await store.changes(tenant, 0, 10, entity_id="a")] == [1, 3, 4]
    assert await store.changes(tenant, 0, 10, collection="deliveries", entity_id="zz") == []


async def test_change_round_trips_every_field(store: Store, tenant: str) -> None:
    original = change(5, "dlv-9", replica_id="tablet", n=42, change_id="c-42")
    await commit(store, tenant, PushBatch(last_seq=5, changes=[original]))

    (stored,) = await store.changes(tenant, 0, 10)
    assert stored == original
    assert stored.hlc == (NOW + 5, 2)
    assert stored.context == {"tablet": 4, "other": 2}


def conflict_log() -> list[ConflictRecord]:
    return [
        conflict(1, 0, entity_id="a", field="status"),
        conflict(1, 1, entity_id="a", field="note", kind="concurrent_text"),
        conflict(2, 0, entity_id="b", field=None, kind="delete_vs_update", status="open"),
        conflict(3, 0, entity_id="a", field="status", status="open"),
        conflict(3, 1, entity_id="a", collection="parcels", field="status"),
    ]


async def test_conflicts_page_by_seq_and_idx(store: Store, tenant: str) -> None:
    log = conflict_log()
    await commit(store, tenant, PushBatch(last_seq=3, conflicts=list(reversed(log))))

    pages: list[list[tuple[int, int]]] = []
    after = None
    while page := await store.conflicts(tenant, after, 2):
        pages.append([(c.seq, c.idx) for c in page])
        after = (page[-1].seq, page[-1].idx)

    assert pages == [[(1, 0), (1, 1)], [(2, 0), (3, 0)], [(3, 1)]]
    assert await store.conflicts(tenant, (1, 0), 10) == log[1:]
    assert await store.conflicts(tenant, (3, 1), 10) == []
    assert await store.conflicts(tenant, None, 0) == []


async def test_conflicts_filters_combine(store: Store, tenant: str) -> None:
    log = conflict_log()
    await commit(store, tenant, PushBatch(last_seq=3, conflicts=log))

    async def keys(filters: ConflictFilter, after: tuple[int, int] | None = None) -> list[tuple[int, int]]:
        return [(c.seq, c.idx) for c in await store.conflicts(tenant, after, 10, filters)]

    assert await keys(ConflictFilter()) == [(1, 0), (1, 1), (2, 0), (3, 0), (3, 1)]
    assert await keys(ConflictFilter(collection="deliveries", entity_id="a")) == [(1, 0), (1, 1), (3, 0)]
    assert await keys(ConflictFilter(field="status")) == [(1, 0), (3, 0), (3, 1)]
    assert await keys(ConflictFilter(kind="concurrent_text")) == [(1, 1)]
    assert await keys(ConflictFilter(status="open")) == [(2, 0), (3, 0)]
    assert await keys(ConflictFilter(entity_id="a", status="resolved")) == [(1, 0), (1, 1), (3, 1)]
    assert await keys(ConflictFilter(entity_id="a", status="resolved"), after=(1, 0)) == [(1, 1), (3, 1)]
    assert await keys(ConflictFilter(collection="notes")) == []
    # One entity (collection and id): read through its own index first, then the other filters and the cursor.
    one = ConflictFilter(collection="deliveries", entity_id="a", status="resolved")
    assert await keys(one) == [(1, 0), (1, 1)]
    assert await keys(one, after=(1, 0)) == [(1, 1)]
    assert await keys(ConflictFilter(collection="deliveries", entity_id="a"), after=(1, 1)) == [(3, 0)]
    assert await keys(ConflictFilter(collection="parcels", entity_id="a")) == [(3, 1)]
    assert await keys(ConflictFilter(collection="deliveries", entity_id="zz")) == []


async def test_get_conflict_by_key(store: Store, tenant: str) -> None:
    log = conflict_log()
    await commit(store, tenant, PushBatch(last_seq=3, conflicts=log))

    assert await store.get_conflict(tenant, 2, 0) == log[2]
    assert (await store.get_conflict(tenant, 2, 0) or log[0]).field is None
    assert await store.get_conflict(tenant, 2, 1) is None


async def test_dead_letters_newest_first_with_status_filter(store: Store, tenant: str) -> None:
    letters = [
        dead_letter(1, created_at=NOW),
        dead_letter(2, created_at=NOW + 20, status="replayed"),
        dead_letter(3, created_at=NOW + 10),
        dead_letter(1, replica_id="tablet", created_at=NOW + 30),
    ]
    await commit(store, tenant, PushBatch(last_seq=0, dead_letters=letters))

    assert await store.dead_letters(tenant, 10) == [letters[3], letters[1], letters[2], letters[0]]
    assert await store.dead_letters(tenant, 2) == [letters[3], letters[1]]
    assert await store.dead_letters(tenant, 10, status="open") == [letters[3], letters[2], letters[0]]
    assert await store.dead_letters(tenant, 10, status="replayed") == [letters[1]]
    assert await store.dead_letters(tenant, 10, status="dismissed") == []
    assert await store.dead_letters(tenant, 0) == []


async def test_dead_letters_at_the_same_time_are_ordered_by_dot(store: Store, tenant: str) -> None:
    letters = [dead_letter(n, replica_id=r) for r in ("phone", "tablet") for n in (1, 2)]
    await commit(store, tenant, PushBatch(last_seq=0, dead_letters=letters))

    assert [(d.replica_id, d.n) for d in await store.dead_letters(tenant, 10)] == [
        ("tablet", 2),
        ("tablet", 1),
        ("phone", 2),
        ("phone", 1),
    ]


async def test_purge_tombstones_removes_only_old_deleted_rows(store: Store, tenant: str) -> None:
    rows = [
        entity("old-dead", 1, deleted=True, updated_at=100),
        entity("old-alive", 2, updated_at=100),
        entity("older-dead", 3, deleted=True, updated_at=50),
        entity("new-dead", 4, deleted=True, updated_at=300),
        entity("edge-dead", 5, deleted=True, updated_at=200),
    ]
    await commit(store, tenant, PushBatch(last_seq=5, entities=rows))

    assert await store.purge_tombstones(tenant, 200) == 2

    assert [e.entity_id for e in await store.pull(tenant, 0, 10)] == ["old-alive", "new-dead", "edge-dead"]
    record = await store.get_tenant(tenant)
    assert record is not None
    assert (record.last_seq, record.purged_seq) == (5, 3)


async def test_purge_tombstones_never_lowers_purged_seq(store: Store, tenant: str) -> None:
    await commit(store, tenant, PushBatch(last_seq=2, entities=[entity("b", 2, deleted=True, updated_at=10)]))
    assert await store.purge_tombstones(tenant, 100) == 1
    await commit(store, tenant, PushBatch(last_seq=3, entities=[entity("a", 1, deleted=True, updated_at=10)]))

    assert await store.purge_tombstones(tenant, 100) == 1
    assert await store.purge_tombstones(tenant, 100) == 0
    record = await store.get_tenant(tenant)
    assert record is not None
    assert record.purged_seq == 2


async def test_purge_with_nothing_to_purge_changes_nothing(store: Store, tenant: str) -> None:
    await commit(store, tenant, PushBatch(last_seq=1, entities=[entity("a", 1, deleted=True, updated_at=500)]))

    assert await store.purge_tombstones(tenant, 500) == 0
    record = await store.get_tenant(tenant)
    assert record is not None
    assert record.purged_seq == 0
    assert len(await store.pull(tenant, 0, 10)) == 1
