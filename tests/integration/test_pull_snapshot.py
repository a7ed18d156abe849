"""A pull page and the reset decided for it come from one snapshot: a push or a tombstone purge committing while the
page is read never makes a device skip a change or a delete.

* A driver's page (``ChannelStore.scoped_page``) is three statements: the tenant row, the entities, the evictions.
  On PostgreSQL they ran in autocommit, each with a snapshot of its own: a push committing between the entities and
  the evictions put its eviction on the page without its entity change, and the cursor (the page's last item)
  skipped the change for good. A purge committing between the tenant row and the entities took a tombstone out of
  the page while ``purged_seq`` (read before) said no reset was due.
* A tenant-wide pull read ``purged_seq`` before its page: a purge committing in between lost the delete the same way,
  on every backend.

The interleavings are injected: a statement runs on PostgreSQL inside SQLAlchemy's greenlet, where ``await_only``
can run a push or a purge to its commit between two statements of the page.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest
from sqlalchemy import Connection
from sqlalchemy.util import await_only

import syncstore.sql_channels as sql_channels
from syncproto.messages import PushRequest
from syncserver.auth.tokens import Principal
from tests.integration.conftest import Server, change

ReadAll = Any


def set_(field: str, value: object) -> dict[str, object]:
    return {"op": "set", "field": field, "value": value}


def between_statements(monkeypatch: pytest.MonkeyPatch, after: int, work: Any) -> list[int]:
    """Run ``await work()`` once, after the first ``after`` statements of the next scoped page (tenant row,
    entities, evictions), before the rest; returns a list that holds 1 once it ran."""
    original: ReadAll = sql_channels._read_all
    fired: list[int] = []

    def racing(reads: list[Any], conn: Connection) -> list[Any]:
        if len(reads) < 2 or fired:
            result: list[Any] = original(reads, conn)
            return result
        fired.append(1)
        out = [conn.execute(q, p).mappings().all() for q, p in reads[:after]]
        await_only(work())
        out += [conn.execute(q, p).mappings().all() for q, p in reads[after:]]
        return out

    monkeypatch.setattr(sql_channels, "_read_all", racing)
    return fired


async def a_synced_driver(server: Server, entities: dict[str, list[dict[str, object]]]) -> tuple[str, Any, str]:
    """A tenant whose console created ``entities`` (each in depot dxb, with its extra ops, counters 1, 2, ...), and
    a driver of that depot synced to the end: the tenant, the driver's headers and its cursor."""
    tenant = await server.tenant()
    driver = server.headers(tenant, "drv", "driver", ("depot:dxb",))
    creates = [change(n, e, [set_("depot", "dxb"), *ops]) for n, (e, ops) in enumerate(entities.items(), start=1)]
    await server.push(server.headers(tenant, "boss"), "console", creates)
    seen, cursor = await server.pull_all(driver)
    assert sorted(v["entity"] for v in seen) == sorted(entities)
    return tenant, driver, cursor


@pytest.mark.postgres
@pytest.mark.parametrize("backend_url", ["postgres"], indirect=True)
async def test_a_push_between_the_entities_and_the_evictions_is_not_skipped(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant, driver, cursor = await a_synced_driver(server, {"X": [], "Y": [set_("status", "pending")]})

    async def push() -> None:
        # One commit: Y is delivered (seq 3), X moves to another depot (seq 4, an eviction for the driver).
        request = msgspec.convert(
            {
                "replica": "console",
                "changes": [
                    change(3, "Y", [set_("status", "delivered")], context={"console": 2}),
                    change(4, "X", [set_("depot", "abu")], context={"console": 1}),
                ],
            },
            PushRequest,
        )
        response = await server.app.state.services.push.push(Principal(tenant, "boss", "dispatcher"), request)
        assert [type(r).__name__ for r in response.results] == ["Applied", "Applied"]

    fired = between_statements(monkeypatch, 2, push)  # after the tenant row and the entities
    changes, evictions, resets = await pull_to_end(server, driver, cursor)
    assert fired == [1]
    assert resets == 0
    y = [v for v in changes if v["entity"] == "Y"]
    assert [v["fields"]["status"]["value"] for v in y][-1:] == ["delivered"], changes
    assert [e["entity"] for e in evictions] == ["X"]


async def pull_to_end(
    server: Server, headers: dict[str, str], cursor: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """Every change and eviction from ``cursor`` on, in two sync rounds (each pulls until ``more`` is false), and
    how many resets came (each one starts over)."""
    changes: list[dict[str, Any]] = []
    evictions: list[dict[str, Any]] = []
    resets = rounds = 0
    while True:
        r = await server.client.post("/v1/sync/pull", json={"cursor": cursor}, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        if body["reset"]:
            resets += 1
            assert resets < 3, body
            changes, evictions, cursor = [], [], None
            continue
        changes += body["changes"]
        evictions += body["evictions"]
        cursor = body["cursor"]
        rounds += not body["more"]
        if rounds == 2:
            return changes, evictions, resets


async def delete_e1_deliver_e2(server: Server, boss: Any) -> None:
    """The console deletes E1 (its counter 3) and marks E2 delivered (4), having seen both."""
    await server.push(
        boss,
        "console",
        [
            change(3, "E1", [{"op": "delete"}], context={"console": 1}),
            change(4, "E2", [set_("status", "delivered")], context={"console": 2}),
        ],
    )


@pytest.mark.postgres
@pytest.mark.parametrize("backend_url", ["postgres"], indirect=True)
async def test_a_purge_between_the_tenant_row_and_a_drivers_page_is_seen(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant, driver, cursor = await a_synced_driver(server, {"E1": [], "E2": []})
    boss = server.headers(tenant, "boss")
    await delete_e1_deliver_e2(server, boss)
    store = server.app.state.store

    async def purge() -> None:  # ``syncserver gc`` runs now
        assert await store.purge_tombstones(tenant, int(time.time() * 1000) + 3_600_000) == 1

    fired = between_statements(monkeypatch, 1, purge)  # after the tenant row
    changes, evictions, resets = await pull_to_end(server, driver, cursor)
    assert fired == [1]
    # Either the page still held the tombstone (one snapshot), or the device was told to start over.
    told = resets > 0 or any(v["entity"] == "E1" and v["deleted"] for v in changes)
    told = told or "E1" in [e["entity"] for e in evictions]
    assert told, f"the driver was told neither to reset nor that E1 is gone: {changes} {evictions}"
    assert [(v["entity"], v["fields"]["status"]["value"]) for v in changes if v["entity"] == "E2"] == [
        ("E2", "delivered")
    ]


async def test_a_purge_between_the_reset_check_and_the_page_is_seen(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tenant-wide, every backend: the purge commits just before the page is read."""
    tenant = await server.tenant()
    boss = server.headers(tenant, "boss")
    await server.push(
        boss, "console", [change(1, "E1", [set_("status", "pending")]), change(2, "E2", [set_("status", "pending")])]
    )
    seen, cursor = await server.pull_all(boss)
    assert {v["entity"] for v in seen} == {"E1", "E2"}
    await delete_e1_deliver_e2(server, boss)
    store = server.app.state.store
    real_pull = store.pull
    fired: list[int] = []

    async def pull_after_gc(*args: Any, **kwargs: Any) -> Any:
        if not fired:
            fired.append(await store.purge_tombstones(tenant, int(time.time() * 1000) + 3_600_000))
        return await real_pull(*args, **kwargs)

    monkeypatch.setattr(store, "pull", pull_after_gc)
    r = await server.client.post("/v1/sync/pull", json={"cursor": cursor}, headers=boss)
    assert r.status_code == 200, r.text
    assert fired == [1]
    monkeypatch.setattr(store, "pull", real_pull)
    body = r.json()
    assert (body["reset"], body["changes"], body["cursor"]) == (True, [], None), body
    # The device starts over: E1 is gone, E2 is delivered.
    again, _ = await server.pull_all(boss)
    assert [(v["entity"], v["fields"]["status"]["value"]) for v in again] == [("E2", "delivered")]
