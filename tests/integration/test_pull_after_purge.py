"""A fresh device on a tenant that ever collected tombstones syncs to the end, over several pages.

A pull from the start carries, in its cursors, the tenant's ``purged_seq`` as it began (``cursor.Position.floor``):
only a collection after that can hide a delete from it. Before, its cursors said it was whole at seq 0, every page
after the first answered ``reset``, and a device with more entities than a page could never finish its first sync
(the SDKs give up after two resets in one pull). A collection while the pull goes on still resets it.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from syncserver.settings import LiveSettings
from tests.integration.conftest import Server, change, make_settings, start
from tests.integration.test_ws import WS, connected

Headers = dict[str, str]
ENTITIES = 7


def set_(field: str, value: object) -> dict[str, object]:
    return {"op": "set", "field": field, "value": value}


async def purged_tenant(server: Server) -> tuple[str, Headers]:
    """``ENTITIES`` deliveries of depot a alive, and one more deleted then collected (``purged_seq`` > 0)."""
    tenant = await server.tenant()
    boss = server.headers(tenant, "boss")
    changes = [change(i + 1, f"E{i}", [set_("depot", "a"), set_("status", "pending")]) for i in range(ENTITIES)]
    changes.append(change(ENTITIES + 1, "GONE", [set_("depot", "a")]))
    changes.append(change(ENTITIES + 2, "GONE", [{"op": "delete"}], context={"console": ENTITIES + 1}))
    await server.push(boss, "console", changes)
    store = server.app.state.store
    assert await store.purge_tombstones(tenant, int(time.time() * 1000) + 3_600_000) == 1
    assert (await store.get_tenant(tenant)).purged_seq > 0
    return tenant, boss


async def pull_pages(server: Server, headers: Headers, limit: int) -> tuple[list[str], int]:
    """Pull from the start in pages of ``limit``: the entities received, and the resets answered."""
    received: list[str] = []
    cursor: str | None = None
    resets = 0
    for _ in range(50):
        r = await server.client.post("/v1/sync/pull", json={"cursor": cursor, "limit": limit}, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        if body.get("reset"):
            resets += 1
            if resets > 2:
                return received, resets
            received, cursor = [], None
            continue
        received += [v["entity"] for v in body["changes"]]
        cursor = body["cursor"]
        if not body["more"]:
            return received, resets
    raise AssertionError("the pull never ended")


@pytest.mark.parametrize("role", ["dispatcher", "driver"])
async def test_a_fresh_device_pulls_every_page_after_a_collection(server: Server, role: str) -> None:
    tenant, _ = await purged_tenant(server)
    headers = server.headers(tenant, "u1", role, ("depot:a",))  # type: ignore[arg-type]
    received, resets = await pull_pages(server, headers, limit=2)
    assert (sorted(received), resets) == (sorted(f"E{i}" for i in range(ENTITIES)), 0)


@pytest.mark.parametrize("role", ["dispatcher", "driver"])
async def test_a_collection_while_a_fresh_device_pulls_still_resets_it(server: Server, role: str) -> None:
    """An entity the first page sent is deleted and collected before the device reads on: told to start over."""
    tenant, boss = await purged_tenant(server)
    headers = server.headers(tenant, "u1", role, ("depot:a",))  # type: ignore[arg-type]
    first = (await server.client.post("/v1/sync/pull", json={"cursor": None, "limit": 2}, headers=headers)).json()
    sent = first["changes"][0]
    await server.push(boss, "console", [change(ENTITIES + 3, sent["entity"], [{"op": "delete"}], context=sent["vv"])])
    assert await server.app.state.store.purge_tombstones(tenant, int(time.time() * 1000) + 3_600_000) == 1
    body = {"cursor": first["cursor"], "limit": 2}
    after = (await server.client.post("/v1/sync/pull", json=body, headers=headers)).json()
    assert after["reset"] is True


@pytest.fixture
async def small_pages(tmp_path: Path) -> Any:
    settings = make_settings(tmp_path, "memory://", live=replace(LiveSettings(), page_limit=2))
    async for s in start(settings):
        yield s


@pytest.mark.parametrize("role", ["dispatcher", "driver"])
async def test_a_fresh_websocket_catch_up_ends_after_a_collection(small_pages: Server, role: str) -> None:
    """Over the WebSocket: a catch-up of several ``changes`` messages, then ``synced``, and no ``reset``; a cursor
    stored half-way resumes without one too."""
    server = small_pages
    tenant, _ = await purged_tenant(server)
    headers = server.headers(tenant, "u1", role, ("depot:a",))  # type: ignore[arg-type]
    kinds: list[str] = []
    received: list[str] = []
    midway: str | None = None
    with connected(await server.client.websocket_connect(WS, headers=headers)) as peer:
        peer.hello(cursor=None)
        while True:
            message = peer.recv()
            kinds.append(message["type"])
            if message["type"] == "synced":
                break
            if message["type"] == "changes":
                received += [v["entity"] for v in message["changes"]]
                if message["more"] and midway is None:
                    midway = message["cursor"]
    assert "reset" not in kinds, kinds
    assert kinds.count("changes") > 1, kinds
    assert sorted(received) == sorted(f"E{i}" for i in range(ENTITIES))
    assert midway is not None
    rest, resets = await pull_pages_from(server, headers, midway)
    assert resets == 0
    assert set(rest) <= {f"E{i}" for i in range(ENTITIES)}


async def pull_pages_from(server: Server, headers: Headers, cursor: str) -> tuple[list[str], int]:
    received: list[str] = []
    for _ in range(50):
        r = await server.client.post("/v1/sync/pull", json={"cursor": cursor, "limit": 2}, headers=headers)
        body = r.json()
        if body.get("reset"):
            return received, 1
        received += [v["entity"] for v in body["changes"]]
        cursor = body["cursor"]
        if not body["more"]:
            return received, 0
    raise AssertionError("the pull never ended")
