"""An eviction is sent only when the entity's own state takes it out of the token's channels.

Channel rows are an index: a row written behind the server's back (``UPDATE entity_channels SET member = false``)
made an eviction, and the device dropped an entity its token may see. Entities found through channel rows were
already checked against their decrypted state; evictions now are too: one its state does not make is left out
and counted like a foreign channel row (``quarantine.foreign_channel_row``), one whose row fails its integrity
check is named ``unavailable`` (the device keeps what it holds and reads it again by id).
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update

from syncserver.integrity import quarantine
from syncstore import SqlStore
from syncstore.sql_log import of_tenant
from syncstore.tables import entities, entity_channels
from tests.integration.conftest import Server, change

Headers = dict[str, str]


def set_(field: str, value: object) -> dict[str, object]:
    return {"op": "set", "field": field, "value": value}


@pytest.fixture
async def sql(server: Server, backend_url: str) -> Server:
    if backend_url == "memory://":
        pytest.skip("the memory store keeps no rows to tamper with")
    return server


async def run_sql(server: Server, statement: Any) -> None:
    store = server.app.state.store
    assert isinstance(store, SqlStore)
    async with store.engine.begin() as conn:
        await conn.execute(statement)


async def pull(server: Server, headers: Headers, cursor: str | None) -> Any:
    r = await server.client.post("/v1/sync/pull", json={"cursor": cursor}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def seed(server: Server) -> tuple[str, Headers, Headers, str]:
    """dlv-1 in driver d1's channel, pulled by d1; then dlv-2 (another driver's) moves the log on to seq 2."""
    tenant = await server.tenant()
    boss = server.headers(tenant, "boss")
    await server.push(boss, "web-1", [change(1, "dlv-1", [set_("driver_id", "d1"), set_("status", "pending")])])
    driver = server.headers(tenant, "d1", "driver", ("driver:d1",))
    got, cursor = await server.pull_all(driver)
    assert [c["entity"] for c in got] == ["dlv-1"]
    await server.push(boss, "web-1", [change(2, "dlv-2", [set_("driver_id", "d9")])])
    return tenant, boss, driver, cursor


def channel_failures(tenant: str) -> list[str]:
    return [f.row for f in quarantine.recent(tenant) if f.table == "entity_channels"]


async def test_an_injected_eviction_is_left_out_and_counted(sql: Server) -> None:
    server = sql
    tenant, boss, driver, cursor = await seed(server)
    ec = entity_channels
    await run_sql(
        server,
        update(ec).where(of_tenant(ec, tenant), ec.c.entity_id == "dlv-1").values(member=False, seq=2),
    )
    body = await pull(server, driver, cursor)
    assert (body["evictions"], body["changes"]) == ([], [])
    assert channel_failures(tenant) == ["deliveries/dlv-1"]
    # A real move out of the driver's channel is evicted as before.
    await server.push(boss, "web-1", [change(3, "dlv-3", [set_("driver_id", "d1")])])
    body = await pull(server, driver, body["cursor"])
    assert [v["entity"] for v in body["changes"]] == ["dlv-3"]
    await server.push(boss, "web-1", [change(4, "dlv-3", [set_("driver_id", "d9")], context={"web-1": 3})])
    body = await pull(server, driver, body["cursor"])
    assert [(e["entity"], e["seq"]) for e in body["evictions"]] == [("dlv-3", 4)]
    assert channel_failures(tenant) == ["deliveries/dlv-1"]


async def test_an_eviction_of_a_damaged_row_names_it_unavailable(sql: Server) -> None:
    server = sql
    tenant, boss, driver, cursor = await seed(server)
    await server.push(boss, "web-1", [change(3, "dlv-1", [set_("driver_id", "d9")], context={"web-1": 2})])
    row = await server.app.state.store.get_entity(tenant, "deliveries", "dlv-1")
    damaged = bytes([row.state[0] ^ 1]) + row.state[1:]
    await run_sql(
        server,
        update(entities).where(of_tenant(entities, tenant), entities.c.entity_id == "dlv-1").values(state=damaged),
    )
    body = await pull(server, driver, cursor)
    assert body["evictions"] == []
    assert [(u["entity"], u["code"]) for u in body["unavailable"]] == [("dlv-1", "data_integrity")]
