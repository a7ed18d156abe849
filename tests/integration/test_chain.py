"""The change log's hash chain: pushes extend it, ``verify`` checks it, and every tamper is found.

Each tamper of the audit (a flipped byte, rows swapped, a key version changed, an
entity row rolled back, a change row altered or deleted, an injected channel row,
a truncated tail) is made in the database with SQL, then found by ``Verifier``
(``syncserver verify``) and, where a device would read it, on the read path.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, insert, select, update

from syncserver.cli import main
from syncserver.integrity import chain
from syncserver.integrity.rebuild import EntityRepair
from syncserver.integrity.verify import Report, Verifier
from syncserver.services import Services
from syncserver.settings import Settings
from syncserver.testing import server_env
from syncstore import SqlStore
from syncstore.sql_log import of_tenant, tenant_no
from syncstore.tables import changes, entities, entity_channels, log_names, tenants
from tests.integration.conftest import Server, change, start


def set_(field: str, value: Any) -> dict[str, Any]:
    return {"op": "set", "field": field, "value": value}


@pytest.fixture(autouse=True)
def small_checkpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chain, "CHECKPOINT_EVERY", 4)


@pytest.fixture
async def sql(server: Server, backend_url: str) -> Server:
    if backend_url == "memory://":
        pytest.skip("the memory store keeps no rows to tamper with")
    return server


def services_of(server: Server) -> Services:
    services: Services = server.app.state.services
    return services


async def verify(server: Server, tenant: str, from_seq: int = 0) -> Report:
    s = services_of(server)
    return await Verifier(s.store, s.keyring, s.schema).verify(tenant, from_seq)


def kinds(report: Report) -> set[str]:
    return {p.kind for p in report.problems}


async def seed(server: Server) -> tuple[str, dict[str, str], dict[str, str], dict[str, str]]:
    """Seven changes: dlv-a (driver a) four times, dlv-b (driver b) twice, dlv-c once; checkpoints at 4."""
    tenant = await server.tenant()
    boss = server.headers(tenant, "boss")
    a = server.headers(tenant, "d-a", "driver", ("driver:d-a",))
    b = server.headers(tenant, "d-b", "driver", ("driver:d-b",))
    await server.push(
        boss,
        "web-1",
        [
            change(1, "dlv-a", [set_("driver_id", "d-a"), set_("status", "pending")]),
            change(2, "dlv-b", [set_("driver_id", "d-b"), set_("status", "pending")]),
            change(3, "dlv-c", [set_("status", "pending")]),
        ],
    )
    await server.push(a, "phone-a", [change(1, "dlv-a", [set_("status", "out_for_delivery")], {"web-1": 1})])
    await server.push(b, "phone-b", [change(1, "dlv-b", [set_("status", "failed")], {"web-1": 2})])
    await server.push(
        a,
        "phone-a",
        [
            change(2, "dlv-a", [set_("address", "1 Main St")], {"web-1": 1, "phone-a": 1}),
            change(3, "dlv-a", [set_("status", "delivered")], {"web-1": 1, "phone-a": 2}),
        ],
    )
    return tenant, boss, a, b


async def sql_store(server: Server) -> SqlStore:
    store = services_of(server).store
    assert isinstance(store, SqlStore)
    return store


async def run_sql(server: Server, *statements: Any) -> None:
    async with (await sql_store(server)).engine.begin() as conn:
        for statement in statements:
            await conn.execute(statement)


async def one(server: Server, query: Any) -> Any:
    async with (await sql_store(server)).engine.connect() as conn:
        return (await conn.execute(query)).one()


async def pull(server: Server, headers: dict[str, str]) -> Any:
    r = await server.client.post("/v1/sync/pull", json={"cursor": None}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def test_pushes_chain_every_change_and_verify_finds_nothing_wrong(server: Server) -> None:
    tenant, *_ = await seed(server)
    store = services_of(server).store
    log = await store.changes(tenant, 0, 100)
    assert [c.seq for c in log] == list(range(1, 8))
    prev = chain.genesis(tenant)
    cipher = await services_of(server).keyring.cipher(tenant)
    from syncserver.sync import payloads

    for c in log:
        assert c.chain == chain.link(prev, c, payloads.open_ops_plaintext(cipher, c))
        prev = c.chain
    record = await store.get_tenant(tenant)
    assert record is not None
    assert record.chain_head == prev
    entity = await store.get_entity(tenant, "deliveries", "dlv-a")
    assert entity is not None
    assert entity.chain == log[-1].chain  # bound to the change that produced it
    marks = await services_of(server).integrity.integrity.checkpoints(tenant, 0, 10)
    assert [m.seq for m in marks] == [4]  # the push that crossed seq 4 ended at 4
    report = await verify(server, tenant)
    assert report.problems == []
    assert (report.changes, report.entities, report.checkpoints, report.legacy) == (7, 3, 1, 0)
    assert (await verify(server, tenant, from_seq=4)).problems == []


async def test_a_rolled_back_entity_row_is_found_by_verify_and_on_every_read(sql: Server) -> None:
    server = sql
    tenant, boss, a, _ = await seed(server)
    where = (of_tenant(entities, tenant)) & (entities.c.entity_id == "dlv-a")
    old = await one(server, select(entities.c.state, entities.c.seq, entities.c.chain, entities.c.vv).where(where))
    await server.push(a, "phone-a", [change(4, "dlv-a", [set_("address", "2 Side St")], {"web-1": 1, "phone-a": 3})])
    assert (await verify(server, tenant)).problems == []

    # A restore of the entities table from an older backup: every column of the row as it was.
    await run_sql(
        server, update(entities).where(where).values(state=old.state, seq=old.seq, chain=old.chain, vv=old.vv)
    )
    report = await verify(server, tenant)
    assert [(p.kind, p.where) for p in report.problems] == [("entity", "deliveries/dlv-a")]
    body = await pull(server, boss)
    assert [u["entity"] for u in body["unavailable"]] == ["dlv-a"]
    assert sorted(e["entity"] for e in body["changes"]) == ["dlv-b", "dlv-c"]
    r = await server.client.get("/v1/entities/deliveries/dlv-a", headers=a)
    assert (r.status_code, r.json()["error"]["code"]) == (500, "data_integrity")
    results = await server.push(a, "phone-a", [change(5, "dlv-a", [set_("status", "failed")])])
    assert results[0]["error"]["code"] == "data_integrity"  # never merged onto the old state

    # The old ciphertext under the current seq: its associated data names the old seq.
    await run_sql(server, update(entities).where(where).values(seq=8))
    r = await server.client.get("/v1/entities/deliveries/dlv-a", headers=a)
    assert r.status_code == 500

    # repair rebuilds it from the log; verify is clean again.
    s = services_of(server)
    assert (await EntityRepair(s.store, s.keyring, s.schema).repair(tenant)).repaired == [("deliveries", "dlv-a")]
    assert (await verify(server, tenant)).problems == []
    r = await server.client.get("/v1/entities/deliveries/dlv-a", headers=a)
    assert r.json()["fields"]["address"]["value"] == "2 Side St"


@pytest.mark.parametrize("tamper", ["flip", "swap", "version", "other-tenant"])
async def test_a_tampered_entity_row_is_found(sql: Server, tamper: str) -> None:
    server = sql
    tenant, boss, _, _ = await seed(server)
    await tamper_with(server, tenant, tamper)
    report = await verify(server, tenant)
    assert [(p.kind, p.where) for p in report.problems] == [("entity", "deliveries/dlv-a")]
    assert [u["entity"] for u in (await pull(server, boss))["unavailable"]] == ["dlv-a"]


@pytest.mark.parametrize("tamper", ["flip", "swap", "version", "other-tenant"])
async def test_a_row_tampered_after_devices_pulled_it_is_still_found(sql: Server, tamper: str) -> None:
    """Pulls share opened entity versions (``view_cache``); a row changed since at the same seq is not one of them."""
    server = sql
    tenant, boss, _, _ = await seed(server)
    before = await pull(server, boss)
    assert "unavailable" not in before
    await pull(server, server.headers(tenant, "boss-3"))  # asked for twice: the versions are kept
    assert len(server.app.state.services.pull.view_cache) > 0
    await tamper_with(server, tenant, tamper)
    other_device = server.headers(tenant, "boss-2")
    assert [u["entity"] for u in (await pull(server, other_device))["unavailable"]] == ["dlv-a"]
    assert "dlv-a" not in [c["entity"] for c in (await pull(server, other_device))["changes"]]


async def tamper_with(server: Server, tenant: str, tamper: str) -> None:
    """Change dlv-a's entity row with SQL: a flipped byte, another entity's or tenant's state, a key version."""
    where = (of_tenant(entities, tenant)) & (entities.c.entity_id == "dlv-a")
    if tamper == "flip":
        state = bytearray((await one(server, select(entities.c.state).where(where))).state)
        state[-3] ^= 0x40
        await run_sql(server, update(entities).where(where).values(state=bytes(state)))
    elif tamper == "swap":
        other = (of_tenant(entities, tenant)) & (entities.c.entity_id == "dlv-b")
        theirs = await one(server, select(entities.c.state, entities.c.seq, entities.c.chain).where(other))
        await run_sql(server, update(entities).where(where).values(state=theirs.state))
    elif tamper == "version":
        await run_sql(server, update(entities).where(where).values(key_version=2))
    else:
        other, *_ = await seed(server)  # the same entity, seq and link shape, in another tenant
        theirs = (of_tenant(entities, other)) & (entities.c.entity_id == "dlv-a")
        row = await one(server, select(entities.c.state, entities.c.seq, entities.c.chain).where(theirs))
        await run_sql(server, update(entities).where(where).values(state=row.state, seq=row.seq, chain=row.chain))


async def test_a_deleted_or_altered_change_row_breaks_the_chain(sql: Server) -> None:
    server = sql
    tenant, boss, _, _ = await seed(server)
    # Altered metadata (who made change 5): the payload still opens, the link no longer follows.
    await run_sql(server, insert(log_names).values(tenant_id=tenant, no=99, name="d-x"))
    await run_sql(server, update(changes).where(of_tenant(changes, tenant) & (changes.c.seq == 5)).values(user_no=99))
    assert {(p.kind, p.where.split(" (")[0]) for p in (await verify(server, tenant)).problems} == {("link", "seq 5")}

    # A deleted row: a gap in the seqs; it was dlv-a's latest change, so dlv-a no longer matches the log.
    await run_sql(server, delete(changes).where(of_tenant(changes, tenant) & (changes.c.seq == 7)))
    report = await verify(server, tenant)
    assert {"missing", "entity", "head"} <= kinds(report)
    assert [u["entity"] for u in (await pull(server, boss))["unavailable"]] == ["dlv-a"]


async def test_a_change_row_rolled_back_to_another_rows_content_is_found(sql: Server) -> None:
    server = sql
    tenant, _, _, _ = await seed(server)
    src = await one(
        server,
        select(changes.c.payload, changes.c.chain, changes.c.key_version).where(
            of_tenant(changes, tenant) & (changes.c.seq == 4)
        ),
    )
    await run_sql(
        server,
        update(changes)
        .where(of_tenant(changes, tenant) & (changes.c.seq == 6))
        .values(payload=src.payload, chain=src.chain),
    )
    report = await verify(server, tenant)
    assert ("payload", "seq 6") in {(p.kind, p.where.split(" (")[0]) for p in report.problems}
    r = await server.client.get(
        "/v1/admin/entities/deliveries/dlv-a/history", headers=server.headers(tenant, "root", "admin")
    )
    assert r.status_code == 200, r.text
    assert [c["result"] for c in r.json()["changes"]] == ["applied", "applied", "unavailable", "applied"]


async def test_an_injected_channel_row_shows_another_drivers_entity_to_nobody(sql: Server) -> None:
    server = sql
    tenant, boss, a, _ = await seed(server)
    # A concurrent write to dlv-b: a conflict on driver b's delivery.
    await server.push(boss, "web-2", [change(1, "dlv-b", [set_("status", "delivered")])])
    conflict = (await server.client.get("/v1/conflicts", headers=boss)).json()["conflicts"][0]
    assert conflict["entity"] == "dlv-b"
    await run_sql(
        server,
        insert(entity_channels).values(
            tenant_no=tenant_no(tenant),
            collection="deliveries",
            entity_id="dlv-b",
            channel="driver:d-a",
            seq=6,
            joined_seq=6,
            member=True,
        ),
    )
    assert [e["entity"] for e in (await pull(server, a))["changes"]] == ["dlv-a"]
    r = await server.client.get("/v1/entities/deliveries/dlv-b", headers=a)
    assert r.status_code == 404
    assert (await server.client.get("/v1/conflicts", headers=a)).json()["conflicts"] == []
    assert (await server.client.get(f"/v1/conflicts/{conflict['id']}", headers=a)).status_code == 404
    report = await verify(server, tenant)
    assert [(p.kind, p.where) for p in report.problems] == [("channel", "deliveries/dlv-b")]
    # repair rewrites the channel rows from the state: verify is clean again.
    s = services_of(server)
    fixed = await EntityRepair(s.store, s.keyring, s.schema).repair(tenant)
    assert (fixed.repaired, fixed.channels) == ([], [("deliveries", "dlv-b")])
    assert (await verify(server, tenant)).problems == []


async def test_a_truncated_tail_is_found_by_its_checkpoint(sql: Server) -> None:
    server = sql
    tenant, _, _, _ = await seed(server)
    await run_sql(
        server,
        delete(changes).where(of_tenant(changes, tenant) & (changes.c.seq > 2)),
        delete(entities).where((of_tenant(entities, tenant)) & (entities.c.seq > 2)),
        update(tenants).where(tenants.c.id == tenant).values(last_seq=2),
    )
    report = await verify(server, tenant)
    assert "checkpoint" in kinds(report)


async def test_the_chain_survives_key_rotation_reencryption_gc_and_another_tenants_erase(server: Server) -> None:
    tenant, boss, _, _ = await seed(server)
    other, *_ = await seed(server)
    s = services_of(server)
    await s.key_ops.rotate(tenant, "test")
    result = await s.key_ops.reencrypt(tenant, "test")
    assert result.resealed > 0
    assert result.failed == 0
    assert (await verify(server, tenant)).problems == []
    await server.push(boss, "web-1", [change(4, "dlv-c", [{"op": "delete"}], {"web-1": 3})])
    assert await s.store.purge_tombstones(tenant, 2**62) == 1
    assert (await verify(server, tenant)).problems == []
    await s.subjects.erase_tenant(other, "test")
    assert (await verify(server, tenant)).problems == []
    assert [e["entity"] for e in (await pull(server, boss))["changes"]] == ["dlv-b", "dlv-a"]


async def test_the_admin_api_and_page_show_verifications_and_rows_set_aside(sql: Server) -> None:
    server = sql
    tenant, boss, _, _ = await seed(server)
    admin = server.headers(tenant, "root", "admin")
    assert (await server.client.get("/v1/admin/integrity", headers=admin)).json() == {
        "verifications": [],
        "set_aside": [],
    }
    await verify(server, tenant)
    where = (of_tenant(entities, tenant)) & (entities.c.entity_id == "dlv-b")
    await run_sql(server, update(entities).where(where).values(key_version=9))
    await verify(server, tenant)
    await pull(server, boss)
    status = (await server.client.get("/v1/admin/integrity", headers=admin)).json()
    assert [v["ok"] for v in status["verifications"]] == [False, True]  # newest first
    assert status["verifications"][0]["problems"][0]["where"] == "deliveries/dlv-b"
    assert status["verifications"][1]["changes"] == 7
    assert {(f["table"], f["row"]) for f in status["set_aside"]} == {("entities", "deliveries/dlv-b")}
    driver = server.headers(tenant, "d-a", "driver", ("driver:d-a",))
    assert (await server.client.get("/v1/admin/integrity", headers=driver)).status_code == 403


def test_verify_command_prints_what_is_broken_and_exits_1(tmp_path: Path) -> None:
    env = server_env(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}")

    async def prepare() -> str:
        async for server in start(Settings.from_env(env)):
            tenant, *_ = await seed(server)
            return tenant
        raise AssertionError("no server")

    tenant = asyncio.run(prepare())
    ok = CliRunner().invoke(main, ["verify", "--tenant", tenant], env=env)
    assert ok.exit_code == 0, ok.output
    assert f"{tenant}: ok: 7 changes up to seq 7" in ok.output
    with sqlite3.connect(tmp_path / "sync.db") as db:
        db.execute("DELETE FROM changes WHERE tenant_no = (SELECT no FROM tenants WHERE id = ?) AND seq = 3", (tenant,))
    broken = CliRunner().invoke(main, ["verify", "--tenant", tenant, "--from", "1"], env=env)
    assert broken.exit_code == 1
    assert f"{tenant}: missing at seqs 3-3: absent from the log" in broken.output
    assert "Traceback" not in broken.output
