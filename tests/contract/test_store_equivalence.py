"""Differential test: any sequence of pushes and purges reads back the same from SqlStore as from MemoryStore."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncstore import ConflictFilter, MemoryStore, PushBatch, SqlStore, Store
from tests.contract import factories
from tests.contract.factories import NOW, change, conflict, dead_letter, entity, replica

COLLECTIONS = ["deliveries", "parcels"]
IDS = ["a", "b", "c"]


@dataclass(frozen=True)
class Write:
    collection: str
    entity_id: str
    deleted: bool
    age: int


@dataclass(frozen=True)
class Push:
    writes: list[Write]
    rejected: int
    conflicts: int


@dataclass(frozen=True)
class Purge:
    cutoff: int


writes = st.builds(Write, st.sampled_from(COLLECTIONS), st.sampled_from(IDS), st.booleans(), st.integers(0, 3))
operations = st.lists(
    st.one_of(
        st.builds(Push, st.lists(writes, max_size=4), st.integers(0, 2), st.integers(0, 2)),
        st.builds(Purge, st.integers(0, 4)),
    ),
    max_size=6,
)


class Script:
    """Turns operations into identical calls on several stores, numbering seqs and dots."""

    def __init__(self) -> None:
        self.tenant = factories.new_tenant_id()
        self.last_seq = 0
        self.n = 0

    def batch(self, push: Push) -> PushBatch:
        batch = PushBatch(last_seq=self.last_seq)
        for write in push.writes:
            batch.last_seq += 1
            self.n += 1
            seq = batch.last_seq
            batch.changes.append(change(seq, write.entity_id, collection=write.collection, n=self.n))
            batch.entities.append(
                entity(write.entity_id, seq, collection=write.collection, deleted=write.deleted, updated_at=write.age)
            )
        for i, c in enumerate(batch.changes[: push.conflicts]):
            batch.conflicts.append(conflict(c.seq, i, entity_id=c.entity_id, collection=c.collection))
        for _ in range(push.rejected):
            self.n += 1
            batch.dead_letters.append(dead_letter(self.n, created_at=NOW + self.n % 2))
        batch.replicas.append(replica(hwm=self.n))
        self.last_seq = batch.last_seq
        return batch

    async def run(self, store: Store, operations: list[Push | Purge]) -> list[int]:
        """Apply ``operations``; return the purge counts."""
        await store.create_tenant(self.tenant, factories.key(self.tenant), NOW)
        purged = []
        for operation in operations:
            if isinstance(operation, Purge):
                purged.append(await store.purge_tombstones(self.tenant, operation.cutoff))
                continue
            async with store.push_session(self.tenant) as session:
                await session.commit(self.batch(operation))
        return purged


async def snapshot(store: Store, tenant: str) -> dict[str, object]:
    """Everything a reader can observe about ``tenant``."""
    pages, cursor = [], 0
    while page := await store.pull(tenant, cursor, 2):
        pages.append(page)
        cursor = page[-1].seq
    keys = [(c, i) for c in COLLECTIONS for i in IDS]
    async with store.push_session(tenant) as session:
        lookups = (await session.entities(keys), await session.replicas(["phone"]), session.last_seq)
        dots = [await session.dot_change_id("phone", n) for n in range(1, 30)]
    return {
        "tenant": await store.get_tenant(tenant),
        "pull-pages": pages,
        "pull-parcels": await store.pull(tenant, 0, 100, ["parcels"]),
        "changes": await store.changes(tenant, 0, 100),
        "history": [await store.changes(tenant, 0, 100, collection=c, entity_id=i) for c, i in keys],
        "conflicts": await store.conflicts(tenant, None, 100),
        "conflicts-after": await store.conflicts(tenant, (2, 0), 100, ConflictFilter(collection="deliveries")),
        "dead-letters": await store.dead_letters(tenant, 100),
        "lookups": lookups,
        "dots": dots,
    }


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(operations=operations)
async def test_sql_store_reads_like_the_memory_reference(sql_url: str, operations: list[Push | Purge]) -> None:
    reference, store = MemoryStore(), SqlStore.from_url(sql_url)
    try:
        script = Script()
        expected_purged = await script.run(reference, operations)
        script.last_seq, script.n = 0, 0
        assert await script.run(store, operations) == expected_purged
        assert await snapshot(store, script.tenant) == await snapshot(reference, script.tenant)
    finally:
        await store.close()
