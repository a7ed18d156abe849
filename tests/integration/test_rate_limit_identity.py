"""Rate limiting per identity, on both channels, in memory and in Redis (docs/adr/0009-rate-limiting.md).

The budget is per verified identity (tenant, ``sub``), or per client address for requests without a token that
verifies: a flood of distinct junk tokens shares one budget (and one store entry), and two spellings of one JWT
are one identity. The WebSocket channel counts in the same budget and store as HTTP: its upgrade and each push.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.stores.memory import MemoryStore
from redis.asyncio import Redis

from syncserver.auth.ratelimit import FailOpenStore
from tests import services
from tests.integration.conftest import Server, change, make_settings, start
from tests.integration.test_ws import WS, bearer, connected

LIMIT = 5
RATE = f"{LIMIT}/minute"
PULL = "/v1/sync/pull"


@pytest.fixture(params=["memory", "redis"])
async def limited(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Server]:
    overrides: dict[str, Any] = {"rate_limit": RATE}
    if request.param == "redis":
        overrides |= {"redis_url": services.redis_url(), "redis_prefix": services.key_prefix()}
    async for s in start(make_settings(tmp_path, "memory://", **overrides)):
        yield s


async def stored_counters(server: Server) -> int:
    """How many rate-limit counters the server's store holds."""
    store = server.app.state.rate_limiting.store
    if isinstance(store, FailOpenStore):
        assert not store.degraded
        prefix = server.settings.redis_prefix
        assert server.settings.redis_url is not None
        redis = Redis.from_url(server.settings.redis_url)
        try:
            return len([key async for key in redis.scan_iter(match=f"{prefix}ratelimit*")])
        finally:
            await redis.aclose()
    assert isinstance(store, MemoryStore)
    return len(store._store)


def push_message(n: int) -> dict[str, Any]:
    status = [{"op": "set", "field": "status", "value": "pending"}]
    return {"type": "push", "id": f"p{n}", "replica": "phone", "changes": [change(n, f"d{n}", status)]}


def assert_rate_limited(error: dict[str, Any], correlation: str | None = None) -> None:
    assert error["type"] == "error", error
    assert error["code"] == "rate_limited", error
    assert error["id"] == correlation, error
    assert 1 <= error["retry_after"] <= 60, error


async def test_websocket_pushes_count_in_the_http_budget(limited: Server) -> None:
    server = limited
    tenant = await server.tenant()
    headers = bearer(server, tenant, "u1")
    with connected(await server.client.websocket_connect(WS, headers=headers)) as peer:  # the upgrade: 1
        peer.hello()
        for n in range(1, LIMIT):  # 4 pushes: the budget is spent
            peer.send(push_message(n))
            assert peer.recv_type("push_result")["id"] == f"p{n}"
        peer.send(push_message(LIMIT))
        assert_rate_limited(peer.recv_type("error"), f"p{LIMIT}")
        # A request-level error: the session stays open, and nothing of the push was applied.
        peer.send({"type": "ping", "id": "h1"})
        assert peer.recv_type("pong")["id"] == "h1"
    r = await server.client.post(PULL, json={"cursor": None}, headers=headers)
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limited"
    applied, _ = await server.pull_all(bearer(server, tenant, "u2"))
    assert [c["entity"] for c in applied] == [f"d{n}" for n in range(1, LIMIT)]


async def test_a_websocket_upgrade_over_the_budget_is_refused_with_rate_limited(limited: Server) -> None:
    server = limited
    tenant = await server.tenant()
    for _ in range(LIMIT):
        r = await server.client.post(PULL, json={"cursor": None}, headers=bearer(server, tenant, "u1"))
        assert r.status_code == 200
    # Over the budget over HTTP: the upgrade is refused, whichever way the same identity authenticates.
    token = server.verifier.issue(tenant, "u1", "dispatcher", ttl_s=3600)  # another token of the same user
    for how in ("header", "auth message"):
        headers = {"Authorization": f"Bearer {token}"} if how == "header" else {}
        with connected(await server.client.websocket_connect(WS, headers=headers)) as peer:
            if how == "auth message":
                peer.send({"type": "auth", "token": token})
            assert_rate_limited(peer.recv())
            close = peer.closed_with()
            assert (close.code, close.detail) == (4429, "rate_limited")
    # Another user of the tenant has a budget of its own.
    with connected(await server.client.websocket_connect(WS, headers=bearer(server, tenant, "u2"))) as peer:
        peer.hello()


async def test_a_flood_of_distinct_bad_tokens_shares_its_address_budget(limited: Server) -> None:
    server = limited
    tenant = await server.tenant()
    codes = []
    for i in range(30):
        r = await server.client.post(PULL, json={"cursor": None}, headers={"Authorization": f"Bearer junk{i}"})
        codes.append(r.status_code)
    assert codes == [401] * LIMIT + [429] * (30 - LIMIT)
    assert await stored_counters(server) == 1, "one counter for the address, not one per junk token"
    # The WebSocket channel counts its refused credentials in the same address budget.
    junk = {"Authorization": "Bearer junk-ws"}
    with connected(await server.client.websocket_connect(WS, headers=junk)) as peer:
        assert_rate_limited(peer.recv())
        close = peer.closed_with()
        assert (close.code, close.detail) == (4429, "rate_limited")
    # A device with a valid token from the same address counts on its own.
    r = await server.client.post(PULL, json={"cursor": None}, headers=bearer(server, tenant, "u1"))
    assert r.status_code == 200


async def test_two_spellings_of_one_token_share_one_budget(limited: Server) -> None:
    server = limited
    tenant = await server.tenant()
    token = server.verifier.issue(tenant, "u1", "dispatcher")
    spellings = [token, token + "="]  # PyJWT accepts a padded signature: the same token, verified
    codes = []
    for i in range(2 * LIMIT):
        r = await server.client.post(
            PULL, json={"cursor": None}, headers={"Authorization": f"Bearer {spellings[i % 2]}"}
        )
        codes.append(r.status_code)
    assert codes == [200] * LIMIT + [429] * LIMIT
    assert await stored_counters(server) == 1


async def test_websocket_refresh_and_pings_do_not_count(limited: Server) -> None:
    """Only the upgrade and pushes count: a session that pings and refreshes its token keeps its budget."""
    server = limited
    tenant = await server.tenant()
    headers = bearer(server, tenant, "u1")
    with connected(await server.client.websocket_connect(WS, headers=headers)) as peer:
        peer.hello()
        for i in range(2 * LIMIT):
            peer.send({"type": "ping", "id": f"h{i}"})
            assert peer.recv_type("pong")["id"] == f"h{i}"
        peer.send({"type": "auth", "token": server.verifier.issue(tenant, "u1", "dispatcher")})
        peer.send(push_message(1))
        assert peer.recv_type("push_result")["id"] == "p1"
