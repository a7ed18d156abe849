"""Gaps a review found in the integrity tooling, each closed and kept closed.

* Checkpoints are MAC'd under the key version active when written: they count in that version's key usage,
  ``reencrypt`` MACs them again under the active one, and ``destroy`` of the old version leaves ``verify``
  passing (it refused while a checkpoint still needed the version).
* A log whose links were all stripped (``chain`` and the head set to null) no longer passes as rows from
  before the chain: ``verify`` opens those rows too, and their payloads do not open.
* A checkpoint deleted (with the tail after it, or alone) is missed: every multiple of the checkpoint
  interval that the chained log crossed must have its checkpoint.
* ``repair`` of an entity written again after its tombstone was purged replays only its current life.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, update
from sqlalchemy.pool import NullPool

from syncserver.integrity import chain
from syncserver.integrity.rebuild import EntityRepair, RebuildError
from syncserver.integrity.verify import Report, Verifier
from syncserver.services import Services
from syncserver.sync import payloads
from syncstore import SqlStore
from syncstore.engine import create_engine
from syncstore.keystore import CHECKPOINTS, KeyStore
from syncstore.migrate import upgrade
from syncstore.sql_log import of_tenant
from syncstore.tables import chain_checkpoints, changes, entities, entity_channels, entity_purges, tenants
from tests.integration.conftest import Server, change, make_settings, start


def set_(field: str, value: Any) -> dict[str, Any]:
    return {"op": "set", "field": field, "value": value}


@pytest.fixture(autouse=True)
def small_checkpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chain, "CHECKPOINT_EVERY", 4)


@pytest.fixture
async def quick(backend_url: str, tmp_path: Path) -> AsyncIterator[Server]:
    """A server whose key versions may be destroyed right after their retirement (no cache to wait for)."""
    settings = make_settings(tmp_path, backend_url, key_cache_ttl_s=0, dictionary_after_changes=0)
    async for s in start(settings):
        yield s


@pytest.fixture
async def sql(server: Server, backend_url: str) -> Server:
    if backend_url == "memory://":
        pytest.skip("the memory store keeps no rows to tamper with")
    return server


def services_of(server: Server) -> Services:
    services: Services = server.app.state.services
    return services


async def verify(server: Server, tenant: str) -> Report:
    s = services_of(server)
    return await Verifier(s.store, s.keyring, s.schema).verify(tenant)


def kinds(report: Report) -> set[str]:
    return {p.kind for p in report.problems}


async def run_sql(server: Server, *statements: Any) -> None:
    store = services_of(server).store
    assert isinstance(store, SqlStore)
    async with store.engine.begin() as conn:
        for statement in statements:
            await conn.execute(statement)


async def push_each(server: Server, tenant: str, sizes: list[int]) -> None:
    """Pushes of these many changes, each change creating its own entity (seqs 1, 2, ...)."""
    boss = server.headers(tenant, "boss")
    n = 0
    for size in sizes:
        batch = [change(n + i + 1, f"dlv-{n + i + 1}", [set_("status", "pending")]) for i in range(size)]
        await server.push(boss, "web-1", batch)
        n += size


async def checkpoint_seqs(server: Server, tenant: str) -> list[int]:
    return [m.seq for m in await services_of(server).integrity.integrity.checkpoints(tenant, 0, 100)]


# --- 1. checkpoints and key rotation ---------------------------------------------------------------------


async def test_checkpoints_move_with_reencrypt_and_destroying_the_old_version_keeps_verify_passing(
    quick: Server,
) -> None:
    server = quick
    tenant = await server.tenant()
    await push_each(server, tenant, [3, 2, 3, 1])  # checkpoints at 5 and 8
    assert await checkpoint_seqs(server, tenant) == [5, 8]
    store = services_of(server).store
    assert isinstance(store, KeyStore)
    assert (await store.key_usage(tenant))[CHECKPOINTS] == {1: 2}
    admin = server.headers(tenant, "ops", "admin")

    assert (await server.client.post("/v1/admin/keys/rotate", headers=admin)).status_code == 200
    status = (await server.client.get("/v1/admin/keys", headers=admin)).json()
    assert status["stale_rows"] == sum(n for t in (await store.key_usage(tenant)).values() for n in t.values())
    # Re-encrypt everything but the checkpoints: the old version is still needed, destroy refuses.
    ops = services_of(server).key_ops
    sealed = sum(t.get(1, 0) for t in (await store.key_usage(tenant)).values())
    result = await ops.reencrypt(tenant, "test", batch_size=1, max_rows=sealed - 2)
    assert result.remaining == 2
    assert (await store.key_usage(tenant))[CHECKPOINTS] == {1: 2}
    refused = await server.client.post("/v1/admin/keys/1/destroy", headers=admin)
    assert refused.status_code == 409, refused.text
    assert "2 rows are still sealed under version 1" in refused.text

    # The next call resumes with the checkpoints, one per batch.
    result = await ops.reencrypt(tenant, "test", batch_size=1)
    assert (result.resealed, result.failed, result.remaining) == (2, 0, 0)
    assert (await store.key_usage(tenant))[CHECKPOINTS] == {2: 2}
    assert (await server.client.post("/v1/admin/keys/1/destroy", headers=admin)).status_code == 200
    report = await verify(server, tenant)
    assert report.problems == []
    assert report.checkpoints == 2


async def test_reencrypt_never_signs_a_forged_checkpoint_anew(quick: Server, backend_url: str) -> None:
    if backend_url == "memory://":
        pytest.skip("the memory store keeps no rows to tamper with")
    server = quick
    tenant = await server.tenant()
    await push_each(server, tenant, [3, 2])  # a checkpoint at 5
    where = (chain_checkpoints.c.tenant_id == tenant) & (chain_checkpoints.c.seq == 5)
    await run_sql(server, update(chain_checkpoints).where(where).values(mac=b"\x00" * 32))
    ops = services_of(server).key_ops
    await ops.rotate(tenant, "test")
    result = await ops.reencrypt(tenant, "test")
    assert (result.failed, result.remaining) == (1, 1)  # reported and left under version 1
    store = services_of(server).store
    assert isinstance(store, KeyStore)
    assert (await store.key_usage(tenant))[CHECKPOINTS] == {1: 1}
    assert "checkpoint" in kinds(await verify(server, tenant))


# --- 2. stripped links ----------------------------------------------------------------------------------


async def test_a_log_whose_links_were_all_stripped_fails_verify(sql: Server) -> None:
    server = sql
    tenant = await server.tenant()
    await push_each(server, tenant, [3])
    assert (await verify(server, tenant)).problems == []
    await run_sql(
        server,
        update(changes).where(of_tenant(changes, tenant)).values(chain=None),
        update(tenants).where(tenants.c.id == tenant).values(chain_head=None),
    )
    report = await verify(server, tenant)
    assert kinds(report) == {"payload"}
    assert [p.where for p in report.problems] == [f"seq {s} (deliveries/dlv-{s})" for s in (1, 2, 3)]


async def test_rows_from_before_the_chain_still_pass_when_they_open(server: Server) -> None:
    """A real legacy prefix: rows sealed without a link (as before migration 0005) open, and pass."""
    tenant = await server.tenant()
    await push_each(server, tenant, [2])
    s = services_of(server)
    store = s.store
    cipher = await s.keyring.cipher(tenant)
    log = await store.changes(tenant, 0, 10)
    if isinstance(store, SqlStore):
        for c in log:
            plaintext = payloads.open_ops_plaintext(cipher, c)
            version, blob = payloads.seal_ops(cipher, c.collection, c.entity_id, c.seq, None, plaintext)
            where = of_tenant(changes, tenant) & (changes.c.seq == c.seq)
            await run_sql(server, update(changes).where(where).values(chain=None, payload=blob, key_version=version))
        await run_sql(
            server,
            update(entities).where(of_tenant(entities, tenant)).values(chain=None),
            update(tenants).where(tenants.c.id == tenant).values(chain_head=None),
        )
        report = await verify(server, tenant)
        assert report.legacy == 2
        assert kinds(report) <= {"entity"}  # the entity rows are bound to their links: not this test's point
        assert "payload" not in kinds(report)


# --- 3. deleted checkpoints -----------------------------------------------------------------------------


async def test_a_tail_truncated_across_a_deleted_checkpoint_is_found(sql: Server) -> None:
    server = sql
    tenant = await server.tenant()
    await push_each(server, tenant, [3, 2, 2])  # 1-3, 4-5 (crosses 4: a checkpoint at 5), 6-7
    assert await checkpoint_seqs(server, tenant) == [5]
    assert (await verify(server, tenant)).problems == []
    head = (await services_of(server).store.changes(tenant, 3, 1))[0].chain
    keep = 4  # past the multiple 4, before its checkpoint at 5
    await run_sql(
        server,
        delete(changes).where(of_tenant(changes, tenant) & (changes.c.seq > keep)),
        delete(entities).where(of_tenant(entities, tenant) & (entities.c.seq > keep)),
        delete(entity_channels).where(of_tenant(entity_channels, tenant) & (entity_channels.c.seq > keep)),
        delete(chain_checkpoints).where((chain_checkpoints.c.tenant_id == tenant) & (chain_checkpoints.c.seq > keep)),
        update(tenants).where(tenants.c.id == tenant).values(last_seq=keep, chain_head=head),
    )
    report = await verify(server, tenant)
    assert [(p.kind, p.where) for p in report.problems] == [("checkpoint", "seq 4")]


async def test_a_deleted_checkpoint_is_found_without_truncation(sql: Server) -> None:
    server = sql
    tenant = await server.tenant()
    await push_each(server, tenant, [4, 4, 1])  # checkpoints at 4 and 8
    assert await checkpoint_seqs(server, tenant) == [4, 8]
    await run_sql(
        server,
        delete(chain_checkpoints).where((chain_checkpoints.c.tenant_id == tenant) & (chain_checkpoints.c.seq == 4)),
    )
    # The checkpoint at 8 is the crossing of 8, not of 4: but one push may cross several multiples, so only a
    # multiple with no checkpoint at all up to the head is certain. Delete both, then.
    assert (await verify(server, tenant)).problems == []
    await run_sql(
        server,
        delete(chain_checkpoints).where((chain_checkpoints.c.tenant_id == tenant) & (chain_checkpoints.c.seq == 8)),
    )
    report = await verify(server, tenant)
    assert [(p.kind, p.where) for p in report.problems] == [("checkpoint", "seq 4")]


async def test_honest_gaps_pass_one_push_crossing_two_multiples(server: Server) -> None:
    tenant = await server.tenant()
    await push_each(server, tenant, [3, 7])  # 4-10 crosses 4 and 8: one checkpoint, at 10
    assert await checkpoint_seqs(server, tenant) == [10]
    report = await verify(server, tenant)
    assert report.problems == []
    assert report.checkpoints == 1


async def test_a_checkpoint_at_a_seq_without_a_linked_change_is_found(sql: Server) -> None:
    server = sql
    tenant = await server.tenant()
    await push_each(server, tenant, [4, 1])  # a checkpoint at 4
    await run_sql(server, update(changes).where(of_tenant(changes, tenant) & (changes.c.seq == 4)).values(chain=None))
    report = await verify(server, tenant)
    assert ("checkpoint", "seq 4") in {(p.kind, p.where) for p in report.problems}
    assert "payload" in kinds(report)


# --- 4. repair after a purge ----------------------------------------------------------------------------


async def stored_fields(server: Server, tenant: str, key: tuple[str, str]) -> Any:
    s = services_of(server)
    row = await s.store.get_entity(tenant, *key)
    assert row is not None
    return payloads.open_entity(await s.keyring.cipher(tenant), row)


async def test_repair_rebuilds_an_entity_written_again_after_its_tombstone_was_purged(server: Server) -> None:
    tenant = await server.tenant()
    boss = server.headers(tenant, "boss")
    key = ("deliveries", "dlv-1")
    await server.push(boss, "web-1", [change(1, "dlv-1", [set_("note", "deleted-secret"), set_("status", "pending")])])
    await server.push(boss, "web-1", [change(2, "dlv-1", [{"op": "delete"}], {"web-1": 1})])
    s = services_of(server)
    assert await s.store.purge_tombstones(tenant, int(time.time() * 1000) + 1000) == 1
    await server.push(boss, "phone-2", [change(1, "dlv-1", [set_("status", "out_for_delivery")])])
    held = await stored_fields(server, tenant, key)
    assert set(held.state.fields) == {"status"}

    seq, _, rebuilt = await EntityRepair(s.store, s.keyring, s.schema).rebuild(tenant, *key)
    assert seq == 3
    assert rebuilt.state.fields == held.state.fields
    assert rebuilt.state.vv == held.state.vv == {"phone-2": 1}
    assert rebuilt.field_seq == held.field_seq


async def test_repair_keeps_the_history_of_an_entity_revived_before_another_entitys_purge(server: Server) -> None:
    """The counterexample to reading purges off the log: ``purged_seq`` covers this entity's delete, raised by
    another entity's purge, while this entity was revived (old fields and all) before any purge."""
    tenant = await server.tenant()
    boss = server.headers(tenant, "boss")
    key = ("deliveries", "dlv-x")
    await server.push(boss, "web-1", [change(1, "dlv-x", [set_("note", "kept"), set_("status", "pending")])])
    await server.push(boss, "web-1", [change(2, "dlv-x", [{"op": "delete"}], {"web-1": 1})])
    await server.push(boss, "web-1", [change(3, "dlv-y", [set_("status", "pending")])])
    await server.push(boss, "web-1", [change(4, "dlv-y", [{"op": "delete"}], {"web-1": 3})])
    await server.push(boss, "web-1", [change(5, "dlv-x", [set_("status", "failed")], {"web-1": 4})])  # revived
    s = services_of(server)
    assert await s.store.purge_tombstones(tenant, int(time.time() * 1000) + 1000) == 1  # dlv-y only
    record = await s.store.get_tenant(tenant)
    assert record is not None
    assert record.purged_seq == 4  # covers dlv-x's delete at seq 2
    held = await stored_fields(server, tenant, key)
    assert set(held.state.fields) == {"note", "status"}
    _, _, rebuilt = await EntityRepair(s.store, s.keyring, s.schema).rebuild(tenant, *key)
    assert rebuilt.state.fields == held.state.fields
    assert rebuilt.field_seq == held.field_seq


async def test_repair_refuses_to_guess_about_purges_from_before_they_were_recorded(sql: Server) -> None:
    server = sql
    tenant = await server.tenant()
    boss = server.headers(tenant, "boss")
    await server.push(boss, "web-1", [change(1, "dlv-1", [set_("note", "old")])])
    await server.push(boss, "web-1", [change(2, "dlv-1", [{"op": "delete"}], {"web-1": 1})])
    await server.push(boss, "web-1", [change(3, "dlv-1", [set_("status", "pending")], {"web-1": 2})])
    # What migration 0013 leaves for a tenant whose purged_seq was 2 before it: unrecorded purges up to 2.
    await run_sql(server, entity_purges.insert().values(tenant_id=tenant, collection="", entity_id="", seq=2))
    s = services_of(server)
    with pytest.raises(RebuildError, match="not recorded"):
        await EntityRepair(s.store, s.keyring, s.schema).rebuild(tenant, "deliveries", "dlv-1")
    # The same history with the delete above the watermark is certain: no purge can have taken it.
    where = (entity_purges.c.tenant_id == tenant) & (entity_purges.c.collection == "")
    await run_sql(server, update(entity_purges).where(where).values(seq=1))
    _, _, rebuilt = await EntityRepair(s.store, s.keyring, s.schema).rebuild(tenant, "deliveries", "dlv-1")
    assert set(rebuilt.state.fields) == {"note", "status"}


async def test_repair_of_a_damaged_row_after_a_purge_serves_what_the_server_held(sql: Server) -> None:
    server = sql
    tenant = await server.tenant()
    h = server.headers(tenant, "boss")
    await server.push(h, "web-1", [change(1, "dlv-1", [set_("note", "deleted-secret"), set_("status", "pending")])])
    await server.push(h, "web-1", [change(2, "dlv-1", [{"op": "delete"}], {"web-1": 1})])
    s = services_of(server)
    assert await s.store.purge_tombstones(tenant, int(time.time() * 1000) + 1000) == 1
    await server.push(h, "phone-2", [change(1, "dlv-1", [set_("status", "out_for_delivery")])])
    before = (await server.client.get("/v1/entities/deliveries/dlv-1", headers=h)).json()
    store = s.store
    assert isinstance(store, SqlStore)
    where = of_tenant(entities, tenant) & (entities.c.entity_id == "dlv-1")
    async with store.engine.connect() as conn:
        (state,) = (await conn.execute(select(entities.c.state).where(where))).one()
    damaged = bytearray(state)
    damaged[-1] ^= 1
    await run_sql(server, update(entities).where(where).values(state=bytes(damaged)))
    report = await EntityRepair(s.store, s.keyring, s.schema).repair(tenant)
    assert (report.repaired, report.failed) == ([("deliveries", "dlv-1")], [])
    after = (await server.client.get("/v1/entities/deliveries/dlv-1", headers=h)).json()
    assert after["fields"] == before["fields"] == {"status": {"kind": "register", "value": "out_for_delivery"}}
    assert (await verify(server, tenant)).problems == []


async def test_migration_0013_keeps_each_tenants_unrecorded_purges_as_a_watermark(migration_url: str) -> None:
    await upgrade(migration_url, "0012_sqlite_channel_statistics")
    engine = create_engine(migration_url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(tenants),
                [
                    {"id": "purged", "created_at": 0, "last_seq": 9, "purged_seq": 7, "no": 1},
                    {"id": "never", "created_at": 0, "last_seq": 3, "purged_seq": 0, "no": 2},
                ],
            )
        await upgrade(migration_url)
        async with engine.connect() as conn:
            found = (await conn.execute(select(entity_purges))).all()
    finally:
        await engine.dispose()
    assert [tuple(row) for row in found] == [("purged", "", "", 7)]
