"""A cursor is bound to the scope it was issued to (PROTOCOL §4.4, §9.1), and to seqs a database column can hold.

* What a device holds depends on its token's channels: a driver whose new token lost a channel must drop that
  channel's entities, one that gained a channel must get the entities already in it. Neither evictions nor
  entities read from the old cursor can do that, so a cursor issued to another scope answers ``reset`` (over HTTP
  and in a WebSocket ``hello``): the device drops its synced state and pulls its new scope from the start.
* Cursors issued before cursors carried their scope keep working (an upgrade sends no device back to the start).
* A seq outside signed 64 bits is ``invalid_cursor`` (400; 4400 in a ``hello``), not a database error.
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec
import pytest

from syncserver.auth.scopes import Scope
from syncserver.auth.tokens import Role
from syncserver.sync import cursor as cursors
from tests.integration.conftest import Server, change
from tests.integration.test_ws import WS, connected

Headers = dict[str, str]


def set_(field: str, value: object) -> dict[str, object]:
    return {"op": "set", "field": field, "value": value}


def raw_cursor(*parts: object) -> str:
    return base64.urlsafe_b64encode(msgspec.msgpack.encode(list(parts))).rstrip(b"=").decode()


async def seed(server: Server) -> tuple[str, Headers]:
    """EA in depot a, EB in depot b, EC in depot c."""
    tenant = await server.tenant()
    boss = server.headers(tenant, "boss")
    await server.push(
        boss,
        "console",
        [
            change(1, "EA", [set_("depot", "a"), set_("status", "secret")]),
            change(2, "EB", [set_("depot", "b")]),
            change(3, "EC", [set_("depot", "c")]),
        ],
    )
    return tenant, boss


async def pull(server: Server, headers: Headers, cursor: str | None) -> Any:
    r = await server.client.post("/v1/sync/pull", json={"cursor": cursor}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def ws_catch_up(peer: Any) -> tuple[list[str], list[str], list[str]]:
    """The message types until ``synced``, the entities and the evictions streamed."""
    kinds: list[str] = []
    received: list[str] = []
    evicted: list[str] = []
    while True:
        message = peer.recv()
        kinds.append(message["type"])
        if message["type"] == "synced":
            return kinds, received, evicted
        if message["type"] == "changes":
            received += [c["entity"] for c in message["changes"]]
            evicted += [e["entity"] for e in message.get("evictions", [])]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (("depot:a", "depot:b"), ("depot:b", "depot:c")),  # lost a, gained c
        (("depot:a", "depot:b"), ("depot:b",)),  # lost a
        (("depot:b",), ("depot:b", "depot:c")),  # gained c
    ],
)
async def test_a_cursor_of_other_channels_answers_reset(
    server: Server, before: tuple[str, ...], after: tuple[str, ...]
) -> None:
    tenant, _ = await seed(server)
    old = server.headers(tenant, "drv", "driver", before)
    _, cursor = await server.pull_all(old)
    new = server.headers(tenant, "drv", "driver", after)
    body = await pull(server, new, cursor)
    assert (body["reset"], body["changes"], body["cursor"]) == (True, [], None)
    again, _ = await server.pull_all(new)
    assert sorted(v["entity"] for v in again) == sorted(
        {"depot:a": "EA", "depot:b": "EB", "depot:c": "EC"}[c] for c in after
    )


async def test_a_cursor_of_the_same_scope_goes_on(server: Server) -> None:
    tenant, boss = await seed(server)
    driver = server.headers(tenant, "drv", "driver", ("depot:b", "depot:a"))
    _, cursor = await server.pull_all(driver)
    # A refreshed token: same channels, in another order; a dispatcher's cursor serves an admin (the same scope).
    same = server.headers(tenant, "drv", "driver", ("depot:a", "depot:b"))
    await server.push(boss, "console", [change(4, "EB", [set_("status", "x")], context={"console": 3})])
    body = await pull(server, same, cursor)
    assert (body["reset"], [v["entity"] for v in body["changes"]]) == (False, ["EB"])
    _, wide = await server.pull_all(boss)
    body = await pull(server, server.headers(tenant, "root", "admin"), wide)
    assert (body["reset"], body["changes"]) == (False, [])
    # A driver with a dispatcher's cursor: another scope.
    assert (await pull(server, driver, wide))["reset"] is True
    assert (await pull(server, boss, cursor))["reset"] is True


@pytest.mark.parametrize("role", ["dispatcher", "driver"])
async def test_a_cursor_without_a_scope_keeps_working(server: Server, role: Role) -> None:
    """Issued before cursors carried their scope: read under any scope, and the next cursor carries it."""
    tenant, boss = await seed(server)
    headers = server.headers(tenant, "u1", role, ("depot:b",))
    await server.push(boss, "console", [change(4, "EB", [set_("status", "x")], context={"console": 3})])
    for old in (raw_cursor(1, tenant, 3), raw_cursor(1, tenant, 3, 1)):
        body = await pull(server, headers, old)
        assert (body["reset"], [v["entity"] for v in body["changes"]]) == (False, ["EB"])
        other = server.headers(tenant, "u1", "driver", ("depot:c",))
        assert (await pull(server, other, body["cursor"]))["reset"] is True


async def test_a_websocket_hello_with_a_cursor_of_other_channels_resets(server: Server) -> None:
    tenant, _ = await seed(server)
    old = server.headers(tenant, "drv", "driver", ("depot:a", "depot:b"))
    seen, cursor = await server.pull_all(old)
    assert sorted(v["entity"] for v in seen) == ["EA", "EB"]
    new = server.headers(tenant, "drv", "driver", ("depot:b", "depot:c"))
    with connected(await server.client.websocket_connect(WS, headers=new)) as peer:
        peer.hello(cursor=cursor)
        kinds, received, evicted = ws_catch_up(peer)
    # reset first, then the new scope from the start: EA is dropped with the device's synced state.
    assert kinds[0] == "reset", kinds
    assert (sorted(received), evicted) == (["EB", "EC"], [])
    # The same channels resume where they were.
    with connected(await server.client.websocket_connect(WS, headers=old)) as peer:
        peer.hello(cursor=cursor)
        kinds, received, evicted = ws_catch_up(peer)
    assert (kinds, received, evicted) == (["synced"], [], [])
    # So does a cursor without a scope (issued before this change).
    with connected(await server.client.websocket_connect(WS, headers=new)) as peer:
        peer.hello(cursor=raw_cursor(1, tenant, 3))
        kinds, received, evicted = ws_catch_up(peer)
    assert (kinds, received, evicted) == (["synced"], [], [])


async def test_cursors_a_websocket_session_hands_out_are_bound_to_its_scope_too(server: Server) -> None:
    """A device that syncs over the WebSocket only stores the cursors of ``synced`` and ``changes``: they name its
    scope as HTTP's do, so the same device with other channels is reset, and with the same ones goes on."""
    tenant, boss = await seed(server)
    old = server.headers(tenant, "drv", "driver", ("depot:a", "depot:b"))
    with connected(await server.client.websocket_connect(WS, headers=old)) as peer:
        peer.hello(cursor=None)
        message = peer.recv()
        while message["type"] != "synced":
            message = peer.recv()
        cursor = message["cursor"]
    await server.push(boss, "console", [change(4, "EB", [set_("status", "x")], context={"console": 3})])
    body = await pull(server, old, cursor)
    assert (body["reset"], [v["entity"] for v in body["changes"]]) == (False, ["EB"])
    new = server.headers(tenant, "drv", "driver", ("depot:b", "depot:c"))
    assert (await pull(server, new, cursor))["reset"] is True
    with connected(await server.client.websocket_connect(WS, headers=new)) as peer:
        peer.hello(cursor=cursor)
        kinds, received, _ = ws_catch_up(peer)
    assert kinds[0] == "reset", kinds
    assert sorted(received) == ["EB", "EC"]


@pytest.mark.parametrize("role", ["dispatcher", "driver"])
@pytest.mark.parametrize("scoped", [False, True])
async def test_a_seq_beyond_64_bits_is_an_invalid_cursor(server: Server, role: Role, scoped: bool) -> None:
    tenant = await server.tenant()
    headers = server.headers(tenant, "u1", role, ("depot:dxb",))

    def make(seq: int, since: int) -> str:
        if not scoped:
            return raw_cursor(1, tenant, seq, since)
        principal = server.verifier.verify(headers["Authorization"].removeprefix("Bearer "))
        return raw_cursor(2, tenant, seq, since, cursors.scope_key(Scope.of(principal)))

    for bad in (make(2**63, 0), make(2**64 - 1, 2**63), make(2**63, 2**63)):
        r = await server.client.post("/v1/sync/pull", json={"cursor": bad}, headers=headers)
        assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_cursor"), r.text
        with connected(await server.client.websocket_connect(WS, headers=headers)) as peer:
            peer.send({"type": "hello", "versions": [1], "cursor": bad})
            close = peer.closed_with()
            assert (close.code, close.detail) == (4400, "invalid_cursor")
    # The largest seq a column holds is a cursor like any other.
    body = await pull(server, headers, make(2**63 - 1, 2**63 - 1))
    assert (body["reset"], body["changes"]) == (False, [])
