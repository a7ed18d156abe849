"""The AdminStore contract, on every backend: filters, keyset pages, compare-and-set, audit log."""

from __future__ import annotations

import asyncio

import pytest

from syncstore import AdminStore, AuditRecord, ConflictOverride, ConflictQuery, DeadLetterQuery, PushBatch, Store
from tests.contract import factories
from tests.contract.factories import NOW


def admin(store: Store) -> AdminStore:
    assert isinstance(store, AdminStore), f"{type(store).__name__} must implement AdminStore"
    return store


async def seed_conflicts(store: Store, tenant: str) -> None:
    async with store.push_session(tenant) as session:
        await session.commit(
            PushBatch(
                last_seq=4,
                changes=[factories.change(s, "dlv-1" if s < 3 else "dlv-2") for s in range(1, 5)],
                conflicts=[
                    factories.conflict(1, 0, kind="register", status="open"),
                    factories.conflict(2, 0, kind="register", status="open", field="note"),
                    factories.conflict(2, 1, kind="clock_skew", status="open", field=None),
                    factories.conflict(3, 0, entity_id="dlv-2", kind="delete_update", field=None, status="open"),
                ],
                replicas=[factories.replica(hwm=4)],
            )
        )


async def test_conflicts_filter_by_metadata_and_time(store: Store, tenant: str) -> None:
    await seed_conflicts(store, tenant)
    s = admin(store)

    async def keys(query: ConflictQuery) -> list[tuple[int, int]]:
        return [(c.seq, c.idx) for c in await s.find_conflicts(tenant, None, 10, query)]

    assert await keys(ConflictQuery()) == [(1, 0), (2, 0), (2, 1), (3, 0)]
    assert await keys(ConflictQuery(entity_id="dlv-1", kind="register")) == [(1, 0), (2, 0)]
    assert await keys(ConflictQuery(field="note")) == [(2, 0)]
    # created_at is NOW + seq in the factory; since is inclusive, until exclusive.
    assert await keys(ConflictQuery(since_ms=NOW + 2, until_ms=NOW + 3)) == [(2, 0), (2, 1)]
    assert await keys(ConflictQuery(collection="other")) == []


async def test_conflict_pages_never_skip_or_repeat(store: Store, tenant: str) -> None:
    await seed_conflicts(store, tenant)
    s = admin(store)
    seen: list[tuple[int, int]] = []
    after = None
    while True:
        page = await s.find_conflicts(tenant, after, 1, ConflictQuery(status="open"))
        if not page:
            break
        seen += [(c.seq, c.idx) for c in page]
        after = (page[-1].seq, page[-1].idx)
    assert seen == [(1, 0), (2, 0), (2, 1), (3, 0)]


async def test_override_sets_status_and_records_who_and_when(store: Store, tenant: str) -> None:
    await seed_conflicts(store, tenant)
    s = admin(store)

    assert await s.conflict_override(tenant, 2, 0) is None
    assert await s.record_override(tenant, ConflictOverride(2, 0, "ops@acme", 9, NOW + 100))
    assert await s.record_override(tenant, ConflictOverride(2, 0, "lead@acme", 10, NOW + 200))

    assert await s.conflict_override(tenant, 2, 0) == ConflictOverride(2, 0, "lead@acme", 10, NOW + 200)
    row = await store.get_conflict(tenant, 2, 0)
    assert row is not None
    assert row.status == "overridden"
    assert [c.seq for c in await s.find_conflicts(tenant, None, 10, ConflictQuery(status="overridden"))] == [2]
    assert not await s.record_override(tenant, ConflictOverride(99, 0, "ops@acme", 11, NOW))
    assert await s.conflict_override(tenant, 99, 0) is None


async def seed_dead_letters(store: Store, tenant: str) -> None:
    letters = [
        factories.dead_letter(1, replica_id="phone-a", created_at=NOW),
        factories.dead_letter(2, replica_id="phone-a", created_at=NOW + 10),
        factories.dead_letter(1, replica_id="phone-b", created_at=NOW + 10),
        factories.dead_letter(3, replica_id="phone-a", created_at=NOW + 20, status="discarded"),
    ]
    async with store.push_session(tenant) as session:
        await session.commit(PushBatch(last_seq=0, dead_letters=letters))


async def test_dead_letters_newest_first_with_keyset_pages(store: Store, tenant: str) -> None:
    await seed_dead_letters(store, tenant)
    s = admin(store)
    keys: list[tuple[str, int]] = []
    before = None
    while True:
        page = await s.find_dead_letters(tenant, before, 1, DeadLetterQuery())
        if not page:
            break
        keys += [(d.replica_id, d.n) for d in page]
        before = (page[-1].created_at, page[-1].replica_id, page[-1].n)
    assert keys == [("phone-a", 3), ("phone-b", 1), ("phone-a", 2), ("phone-a", 1)]


async def test_dead_letter_filters(store: Store, tenant: str) -> None:
    await seed_dead_letters(store, tenant)
    s = admin(store)

    async def keys(query: DeadLetterQuery) -> list[tuple[str, int]]:
        return [(d.replica_id, d.n) for d in await s.find_dead_letters(tenant, None, 10, query)]

    assert await keys(DeadLetterQuery(status="open", replica_id="phone-a")) == [("phone-a", 2), ("phone-a", 1)]
    assert await keys(DeadLetterQuery(since_ms=NOW + 10, until_ms=NOW + 20)) == [("phone-b", 1), ("phone-a", 2)]
    assert await keys(DeadLetterQuery(code="schema_violation", user="user-1", entity_id="dlv-1", status="open")) == [
        ("phone-b", 1),
        ("phone-a", 2),
        ("phone-a", 1),
    ]
    assert await keys(DeadLetterQuery(code="kind_mismatch")) == []


async def test_dead_letter_status_is_compare_and_set(store: Store, tenant: str) -> None:
    await seed_dead_letters(store, tenant)
    s = admin(store)

    assert await s.set_dead_letter_status(tenant, "phone-a", 1, "open", "replaying")
    assert not await s.set_dead_letter_status(tenant, "phone-a", 1, "open", "discarded")
    assert not await s.set_dead_letter_status(tenant, "nobody", 1, "open", "discarded")
    letter = await s.get_dead_letter(tenant, "phone-a", 1)
    assert letter is not None
    assert letter.status == "replaying"
    assert await s.get_dead_letter(tenant, "phone-a", 99) is None


async def test_change_at_and_replica_find_one_dot(store: Store, tenant: str) -> None:
    await seed_conflicts(store, tenant)
    s = admin(store)

    found = await s.change_at(tenant, "phone", 3)
    assert found == factories.change(3, "dlv-2")
    assert await s.change_at(tenant, "phone", 99) is None
    assert await s.get_replica(tenant, "phone") == factories.replica(hwm=4)
    assert await s.get_replica(tenant, "tablet") is None


async def test_audit_log_is_append_only_newest_first_per_tenant(store: Store, tenant: str) -> None:
    s = admin(store)
    other = factories.new_tenant_id()
    ids = [
        await s.append_audit(AuditRecord(0, tenant, "ops", "conflict.override", "c1.0", '{"seq":9}', NOW)),
        await s.append_audit(AuditRecord(0, other, "ops", "dead_letter.discard", "p/1", "{}", NOW)),
        await s.append_audit(AuditRecord(0, tenant, "ops", "dead_letter.replay", "p/2", "{}", NOW + 1)),
        await s.append_audit(AuditRecord(0, None, "ops", "tenant.create", tenant, "{}", NOW + 2)),
    ]
    assert ids == sorted(ids)
    assert len(set(ids)) == 4

    mine = await s.audit_log(tenant, None, 10)
    assert [(e.action, e.target) for e in mine] == [("dead_letter.replay", "p/2"), ("conflict.override", "c1.0")]
    assert mine[1] == AuditRecord(ids[0], tenant, "ops", "conflict.override", "c1.0", '{"seq":9}', NOW)
    assert [e.id for e in await s.audit_log(tenant, ids[2], 10)] == [ids[0]]
    assert [e.target for e in await s.audit_log(tenant, None, 10, target="c1.0")] == ["c1.0"]
    # The database may be shared between tests: look only at this test's target.
    assert [e.action for e in await s.audit_log(None, None, 10, target=tenant)] == ["tenant.create"]
    assert await s.audit_log(tenant, None, 0) == []


@pytest.mark.parametrize("limit", [0, -1])
async def test_non_positive_limits_return_nothing(store: Store, tenant: str, limit: int) -> None:
    await seed_conflicts(store, tenant)
    s = admin(store)
    assert await s.find_conflicts(tenant, None, limit, ConflictQuery()) == []
    assert await s.find_dead_letters(tenant, None, limit, DeadLetterQuery()) == []


async def test_dead_letter_status_change_appends_its_audit_entry_only_when_it_wins(store: Store, tenant: str) -> None:
    await seed_dead_letters(store, tenant)
    s = admin(store)

    def entry(actor: str) -> AuditRecord:
        return AuditRecord(0, tenant, actor, "dead_letter.replay", "phone-a/1", '{"seq":7}', NOW)

    assert await s.set_dead_letter_status(tenant, "phone-a", 1, "open", "replayed", audit=entry("ops"))
    assert not await s.set_dead_letter_status(tenant, "phone-a", 1, "open", "replayed", audit=entry("lead"))
    assert not await s.set_dead_letter_status(tenant, "nobody", 1, "open", "replayed", audit=entry("lead"))
    found = await s.audit_log(tenant, None, 10)
    assert [(e.actor, e.action, e.target, e.details) for e in found] == [
        ("ops", "dead_letter.replay", "phone-a/1", '{"seq":7}')
    ]


async def test_concurrent_dead_letter_claims_one_wins_one_audit_entry(store: Store, tenant: str) -> None:
    """Two admins (or two servers) claim one letter at once: one status change, one audit entry."""
    await seed_dead_letters(store, tenant)
    s = admin(store)
    claims = [
        s.set_dead_letter_status(
            tenant,
            "phone-b",
            1,
            "open",
            "replayed",
            audit=AuditRecord(0, tenant, f"ops-{i}", "dead_letter.replay", "phone-b/1", "{}", NOW),
        )
        for i in range(5)
    ]
    won = await asyncio.gather(*claims)
    assert won.count(True) == 1
    entries = await s.audit_log(tenant, None, 10, target="phone-b/1")
    assert len(entries) == 1
    assert entries[0].actor == f"ops-{won.index(True)}"
    letter = await s.get_dead_letter(tenant, "phone-b", 1)
    assert letter is not None
    assert letter.status == "replayed"
