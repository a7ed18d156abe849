"""A pull names at most ``CAP`` collections (PullRequest and WebSocket ``hello``).

Each collection named is a bound value of the page's query: 65,536 of them (well under the body limit) were over
PostgreSQL's limit of bound values, and the pull answered 503 (``hello``: a closed session). A schema has a handful
of collections, so a longer list is refused as the request's shape: 422 ``invalid_request`` (4400 in a ``hello``).
"""

from __future__ import annotations

import pytest

from syncserver.auth.tokens import Role
from tests.integration.conftest import Server, change
from tests.integration.test_ws import WS, connected

CAP = 256
"""``syncproto.messages.MAX_PULL_COLLECTIONS``, the protocol's maximum (spelled out: a change to it is a protocol
change, and the golden vectors pin it too)."""


@pytest.mark.parametrize("role", ["dispatcher", "driver"])
async def test_a_pull_names_at_most_256_collections(server: Server, role: Role) -> None:
    tenant = await server.tenant()
    boss = server.headers(tenant, "boss")
    await server.push(boss, "console", [change(1, "dlv-1", [{"op": "set", "field": "depot", "value": "dxb"}])])
    headers = server.headers(tenant, "u1", role, ("depot:dxb",))
    for count in (CAP + 1, 70_000):
        collections = [f"c{i}" for i in range(count)]
        r = await server.client.post(
            "/v1/sync/pull", json={"cursor": None, "collections": collections}, headers=headers
        )
        assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request"), r.text[:300]
        with connected(await server.client.websocket_connect(WS, headers=headers)) as peer:
            peer.send({"type": "hello", "versions": [1], "collections": collections})
            close = peer.closed_with()
            assert (close.code, close.detail) == (4400, "invalid_request")
    collections = ["deliveries", *(f"c{i}" for i in range(CAP - 1))]
    r = await server.client.post("/v1/sync/pull", json={"cursor": None, "collections": collections}, headers=headers)
    assert r.status_code == 200, r.text
    assert [v["entity"] for v in r.json()["changes"]] == ["dlv-1"]
    with connected(await server.client.websocket_connect(WS, headers=headers)) as peer:
        peer.hello(collections=collections)
        entities, _ = peer.catch_up()
    assert [v["entity"] for v in entities] == ["dlv-1"]
