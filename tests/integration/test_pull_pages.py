"""A pull over several pages gives every entity whole: an entity first met on a later page carries the
fields it had before the page's cursor (PROTOCOL.md §4.4).

Pages are ordered by each entity's latest change. An entity created early and updated late is met on a
later page, after the device already holds a cursor past its creation: its older fields must still come.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Server, change, make_settings, start
from tests.integration.test_ws import WS, connected

N = 60
PAGE = 25


def create(i: int) -> dict[str, Any]:
    return change(
        i + 1,
        f"dlv-{i:03d}",
        [
            {"op": "set", "field": "status", "value": "pending"},
            {"op": "set", "field": "address", "value": f"Street {i}"},
            {"op": "set", "field": "driver_id", "value": "d1"},
        ],
    )


async def seed(server: Server, headers: dict[str, str]) -> None:
    """N deliveries; then the first half updated (one field), so they come after the second half."""
    await server.push(headers, "desk", [create(i) for i in range(N)])
    updates = [
        change(N + i + 1, f"dlv-{i:03d}", [{"op": "set", "field": "status", "value": "delivered"}], {"desk": i + 1})
        for i in range(N // 2)
    ]
    await server.push(headers, "desk", updates)


def expected() -> dict[str, tuple[str, str, str]]:
    return {f"dlv-{i:03d}": ("delivered" if i < N // 2 else "pending", f"Street {i}", "d1") for i in range(N)}


def whole(views: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """Each entity's fields as a device holds them after applying every view in order."""
    held: dict[str, dict[str, Any]] = {}
    for view in views:
        held.setdefault(view["entity"], {}).update({k: f.get("value") for k, f in view["fields"].items()})
    return {e: (f.get("status"), f.get("address"), f.get("driver_id")) for e, f in held.items()}


@pytest.mark.parametrize("role", ["dispatcher", "driver"])
async def test_a_fresh_device_pulling_in_pages_gets_every_field_of_every_entity(server: Server, role: str) -> None:
    tenant = await server.tenant()
    desk = server.headers(tenant, "desk-user")
    await seed(server, desk)
    reader = server.headers(tenant, "reader", role, ("driver:d1",) if role == "driver" else ())
    views, _ = await server.pull_all(reader, limit=PAGE)
    assert whole(views) == expected()


async def test_a_device_resuming_from_a_mid_pull_cursor_still_gets_older_fields(server: Server) -> None:
    tenant = await server.tenant()
    desk = server.headers(tenant, "desk-user")
    await seed(server, desk)
    reader = server.headers(tenant, "reader")
    r = await server.client.post("/v1/sync/pull", json={"cursor": None, "limit": PAGE}, headers=reader)
    first = r.json()
    assert first["more"]
    # The device stops after one page (offline again) and resumes from the cursor it stored.
    rest, _ = await server.pull_all(reader, cursor=first["cursor"], limit=PAGE)
    assert whole(first["changes"] + rest) == expected()


@pytest.fixture
async def small_pages(backend_url: str, tmp_path: Path) -> AsyncIterator[Server]:
    settings = make_settings(tmp_path, backend_url)
    async for s in start(replace(settings, live=replace(settings.live, page_limit=PAGE))):
        yield s


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_a_fresh_websocket_catch_up_in_pages_gets_every_field(small_pages: Server, encoding: str) -> None:
    server = small_pages
    tenant = await server.tenant()
    desk = server.headers(tenant, "desk-user")
    await seed(server, desk)
    reader = server.headers(tenant, "reader")
    with connected(await server.client.websocket_connect(WS, headers=reader), encoding) as peer:
        peer.hello()
        views, _ = peer.catch_up()
    assert whole(views) == expected()


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_a_live_burst_over_several_feed_pages_reaches_a_subscriber_whole(
    small_pages: Server, encoding: str
) -> None:
    """One commit creates and then updates entities, more than a page of them: the live feed pages the burst by
    each entity's latest change, and an entity met on a later page still brings the fields of its creation."""
    server = small_pages
    tenant = await server.tenant()
    desk = server.headers(tenant, "desk-user")
    reader = server.headers(tenant, "reader")
    with connected(await server.client.websocket_connect(WS, headers=reader), encoding) as peer:
        peer.hello()
        assert peer.catch_up()[0] == []
        updates = [
            change(N + i + 1, f"dlv-{i:03d}", [{"op": "set", "field": "status", "value": "delivered"}], {"desk": i + 1})
            for i in range(N // 2)
        ]
        await server.push(desk, "desk", [create(i) for i in range(N)] + updates)
        views: list[dict[str, Any]] = []
        while whole(views) != expected() and len(views) < 3 * N:
            message = peer.recv()
            if message["type"] == "changes":
                views += message["changes"]
    assert whole(views) == expected()
