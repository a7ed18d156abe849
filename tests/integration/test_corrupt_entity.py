"""One entity row that fails its integrity check never takes its tenant down, and ``repair`` brings it back.

The row's state is damaged in the database (a flipped byte, or another row's
ciphertext copied over it). Pulls go on for every other entity and name the bad
one in ``unavailable``; a push that touches it rejects only that change (a dead
letter); drivers of other entities never notice. ``syncserver repair``
rebuilds it from the change log with the value the log says.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client import REGISTRY
from sqlalchemy import select, text, update

from syncserver.cli import main
from syncserver.integrity.rebuild import EntityRepair
from syncserver.services import Services
from syncserver.settings import Settings
from syncserver.testing import server_env
from syncstore import SqlStore
from syncstore.sql_log import of_tenant
from syncstore.tables import entities
from tests.integration.conftest import Server, change, start
from tests.integration.test_ws import WS, connected


def set_(field: str, value: Any) -> dict[str, Any]:
    return {"op": "set", "field": field, "value": value}


@pytest.fixture
def sql_backend(backend_url: str) -> str:
    if backend_url == "memory://":
        pytest.skip("the memory store keeps no ciphertext to damage")
    return backend_url


async def pull(server: Server, headers: dict[str, str], cursor: str | None = None) -> Any:
    r = await server.client.post("/v1/sync/pull", json={"cursor": cursor}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def seed(server: Server) -> tuple[str, dict[str, str], dict[str, str], dict[str, str]]:
    """dlv-a and dlv-a2 for driver a, dlv-b for driver b; dlv-a is then edited twice."""
    tenant = await server.tenant()
    boss = server.headers(tenant, "boss")
    a = server.headers(tenant, "d-a", "driver", ("driver:d-a",))
    b = server.headers(tenant, "d-b", "driver", ("driver:d-b",))
    results = await server.push(
        boss,
        "web-1",
        [
            change(1, "dlv-a", [set_("driver_id", "d-a"), set_("status", "pending"), set_("address", "1 Main St")]),
            change(2, "dlv-b", [set_("driver_id", "d-b"), set_("status", "pending")]),
            change(3, "dlv-a2", [set_("driver_id", "d-a"), set_("status", "pending")]),
        ],
    )
    assert [r["status"] for r in results] == ["applied"] * 3
    results = await server.push(
        a,
        "phone-a",
        [
            change(1, "dlv-a", [set_("status", "out_for_delivery")], {"web-1": 1}),
            change(2, "dlv-a", [{"op": "inc", "field": "cod_cents", "by": 2000}], {"web-1": 1, "phone-a": 1}),
        ],
    )
    assert [r["status"] for r in results] == ["applied"] * 2
    return tenant, boss, a, b


async def damage(store: SqlStore, tenant: str, entity_id: str, how: str) -> None:
    """Flip one byte of the entity's sealed state, or copy another entity's ciphertext over it."""
    async with store.engine.begin() as conn:
        where = of_tenant(entities, tenant) & (entities.c.entity_id == entity_id)
        if how == "flip":
            sealed = bytearray((await conn.execute(select(entities.c.state).where(where))).scalar_one())
            sealed[len(sealed) // 2] ^= 0x01
            blob = bytes(sealed)
        else:
            other = of_tenant(entities, tenant) & (entities.c.entity_id == "dlv-a2")
            blob = (await conn.execute(select(entities.c.state).where(other))).scalar_one()
        await conn.execute(update(entities).where(where).values(state=blob))


def failures() -> float:
    return REGISTRY.get_sample_value("sync_integrity_failures_total", {"table": "entities"}) or 0.0


@pytest.mark.parametrize("how", ["flip", "moved"])
async def test_one_corrupt_entity_is_named_and_every_other_entity_syncs_until_repair(
    server: Server, sql_backend: str, how: str
) -> None:
    tenant, boss, a, b = await seed(server)
    services: Services = server.app.state.services
    assert isinstance(services.store, SqlStore)
    first_b = await pull(server, b)
    before = failures()
    await damage(services.store, tenant, "dlv-a", how)

    # The dispatcher's pull: every other entity, the bad one named with its seq; the cursor goes to the end.
    body = await pull(server, boss)
    assert [e["entity"] for e in body["changes"]] == ["dlv-b", "dlv-a2"]
    assert body["unavailable"] == [{"collection": "deliveries", "entity": "dlv-a", "seq": 5, "code": "data_integrity"}]
    assert body["more"] is False
    # The driver of the bad entity still gets its other delivery; another driver notices nothing.
    body_a = await pull(server, a)
    assert [e["entity"] for e in body_a["changes"]] == ["dlv-a2"]
    assert [u["entity"] for u in body_a["unavailable"]] == ["dlv-a"]
    body_b = await pull(server, b)
    assert [e["entity"] for e in body_b["changes"]] == ["dlv-b"]
    assert "unavailable" not in body_b
    assert "unavailable" not in await pull(server, b, first_b["cursor"])
    assert failures() > before  # operators hear of it

    # Reading it names the code; writing to it rejects only that change, kept as a dead letter.
    r = await server.client.get("/v1/entities/deliveries/dlv-a", headers=boss)
    assert (r.status_code, r.json()["error"]["code"]) == (500, "data_integrity")
    results = await server.push(
        boss,
        "web-1",
        [change(4, "dlv-a", [set_("status", "delivered")]), change(5, "dlv-b", [set_("status", "delivered")])],
    )
    assert [(r["status"], r.get("error", {}).get("code")) for r in results] == [
        ("rejected", "data_integrity"),
        ("applied", None),
    ]
    letters = await services.store.dead_letters(tenant, 10)
    assert [(d.entity_id, d.code) for d in letters] == [("dlv-a", "data_integrity")]
    # A driver without the entity in scope learns nothing about it: forbidden, as for any other.
    results = await server.push(b, "phone-b", [change(1, "dlv-a", [set_("status", "failed")])])
    assert results[0]["error"]["code"] == "forbidden"

    # Repair rebuilds it from the change log: the value the log says, under the same seq.
    report = await EntityRepair(services.store, services.keyring, services.schema).repair(tenant)
    assert (report.repaired, report.failed) == ([("deliveries", "dlv-a")], [])
    r = await server.client.get("/v1/entities/deliveries/dlv-a", headers=a)
    assert r.status_code == 200, r.text
    fields = {name: f["value"] for name, f in r.json()["fields"].items()}
    assert fields == {
        "driver_id": "d-a",
        "status": "out_for_delivery",
        "address": "1 Main St",
        "cod_cents": 2000,
    }
    assert r.json()["seq"] == 5
    whole = await pull(server, boss)
    assert "unavailable" not in whole
    assert sorted(e["entity"] for e in whole["changes"]) == ["dlv-a", "dlv-a2", "dlv-b"]
    # Nothing was logged: a device at the head of the log has nothing new to pull.
    assert [e["entity"] for e in (await pull(server, boss, body["cursor"]))["changes"]] == ["dlv-b"]
    # A second run finds nothing to do.
    again = await EntityRepair(services.store, services.keyring, services.schema).repair(tenant)
    assert (again.checked, again.repaired) == (3, [])


async def test_the_live_channel_names_a_corrupt_entity_and_goes_on(sqlite_server: Server) -> None:
    server = sqlite_server
    tenant, boss, _, _ = await seed(server)
    services: Services = server.app.state.services
    assert isinstance(services.store, SqlStore)
    await damage(services.store, tenant, "dlv-a", "flip")
    with connected(await server.client.websocket_connect(WS, headers=boss)) as peer:
        peer.hello(replica="desk-1")
        frame = peer.recv_type("changes")
        assert [e["entity"] for e in frame["changes"]] == ["dlv-b", "dlv-a2"]
        assert [(u["entity"], u["code"]) for u in frame["unavailable"]] == [("dlv-a", "data_integrity")]
        peer.recv_type("synced")


def test_repair_command_rebuilds_and_says_what_it_did(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}"
    env = server_env(tmp_path, url)

    async def prepare() -> str:
        async for server in start(Settings.from_env(env)):
            tenant, *_ = await seed(server)
            services: Services = server.app.state.services
            assert isinstance(services.store, SqlStore)
            await damage(services.store, tenant, "dlv-a", "flip")
            return tenant
        raise AssertionError("no server")

    tenant = asyncio.run(prepare())
    result = CliRunner().invoke(main, ["repair", "--tenant", tenant], env=env)
    assert result.exit_code == 0, result.output
    assert f"{tenant}: rebuilt deliveries/dlv-a from the change log" in result.output
    assert f"{tenant}: checked 3 entities, rebuilt 1" in result.output
    result = CliRunner().invoke(main, ["repair", "--tenant", tenant, "--entity", "deliveries/dlv-a"], env=env)
    assert (result.exit_code, f"{tenant}: checked 1 entities, rebuilt 0" in result.output) == (0, True)
    result = CliRunner().invoke(main, ["repair", "--entity", "nocollection"], env=env)
    assert result.exit_code == 2


async def test_a_damaged_conflict_record_is_named_and_the_rest_of_the_list_is_served(
    server: Server, sql_backend: str
) -> None:
    tenant = await server.tenant()
    boss = server.headers(tenant, "boss")
    for entity in ("dlv-1", "dlv-2"):  # two concurrent writes per entity: one conflict each
        await server.push(boss, "phone-a", [change(1 if entity == "dlv-1" else 2, entity, [set_("status", "failed")])])
        await server.push(
            boss, "phone-b", [change(1 if entity == "dlv-1" else 2, entity, [set_("status", "delivered")])]
        )
    listed = (await server.client.get("/v1/conflicts", headers=boss)).json()
    assert [c["entity"] for c in listed["conflicts"]] == ["dlv-1", "dlv-2"]
    assert "unavailable" not in listed
    services: Services = server.app.state.services
    assert isinstance(services.store, SqlStore)
    first = listed["conflicts"][0]
    async with services.store.engine.begin() as conn:
        await conn.execute(
            text("UPDATE conflicts SET details = :d WHERE tenant_id = :t AND seq = :s"),
            {"d": b"\x01" + b"\x00" * 40, "t": tenant, "s": first["seq"]},
        )
    r = await server.client.get("/v1/conflicts", headers=boss)
    assert r.status_code == 200, r.text
    assert [c["entity"] for c in r.json()["conflicts"]] == ["dlv-2"]
    assert r.json()["unavailable"] == [first["id"]]
