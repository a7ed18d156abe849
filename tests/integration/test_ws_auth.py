"""WebSocket authentication: unauthenticated connections are capped per client address and counted in
``/metrics``; a token refresh that fails verification ends the session (PROTOCOL.md §9.1, §9.7, §9.8)."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from syncserver.auth.tokens import TokenVerifier
from syncserver.settings import LiveSettings
from tests.integration.conftest import Server, change, make_settings, start
from tests.integration.test_ws import WS, bearer, connected, token

CAP = 2
UNAUTHENTICATED = "sync_websocket_unauthenticated_connections"
REFUSED = "sync_websocket_unauthenticated_refused_total"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    live = LiveSettings(max_unauthenticated_per_address=CAP, handshake_timeout_ms=5000)
    async for s in start(make_settings(tmp_path, "memory://", live=live)):
        yield s


async def metric(server: Server, name: str) -> float:
    """One sample of ``/metrics`` (prometheus-client's registry is per process: compare with a baseline)."""
    text = (await server.client.get("/metrics")).text
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"{name} not in /metrics"
    return float(found.group(1))


async def until_metric(server: Server, name: str, value: float, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (seen := await metric(server, name)) != value:
        assert time.monotonic() < deadline, f"{name} stayed {seen}, expected {value}"


async def test_unauthenticated_connections_are_capped_per_address_and_counted(server: Server) -> None:
    tenant = await server.tenant()
    base, refused = await metric(server, UNAUTHENTICATED), await metric(server, REFUSED)
    with ExitStack() as stack:
        waiting = [stack.enter_context(connected(await server.client.websocket_connect(WS))) for _ in range(CAP)]
        await until_metric(server, UNAUTHENTICATED, base + CAP)

        with connected(await server.client.websocket_connect(WS)) as over:
            error = over.recv()
            assert (error["type"], error["code"]) == ("error", "too_many_connections")
            assert "authenticate" in error["message"]
            close = over.closed_with()
            assert (close.code, close.detail) == (4429, "too_many_connections")
        assert await metric(server, REFUSED) == refused + 1
        assert await metric(server, UNAUTHENTICATED) == base + CAP, "a refused connection was counted"

        # An authenticated session does not count against the cap, and frees its place.
        waiting[0].send({"type": "auth", "token": token(server, tenant)})
        waiting[0].hello()
        await until_metric(server, UNAUTHENTICATED, base + CAP - 1)
        with connected(await server.client.websocket_connect(WS, headers=bearer(server, tenant))) as peer:
            peer.hello()  # credentials on the upgrade: counted only while they are checked
        with connected(await server.client.websocket_connect(WS)) as late:
            late.send({"type": "auth", "token": token(server, tenant)})
            late.hello()
    await until_metric(server, UNAUTHENTICATED, base)  # every session ended: nobody is counted


async def test_a_refused_credential_frees_its_place_under_the_cap(server: Server) -> None:
    base = await metric(server, UNAUTHENTICATED)
    for _ in range(CAP + 1):  # more bad credentials than the cap, one after the other: none is refused for it
        with connected(await server.client.websocket_connect(WS)) as peer:
            peer.send({"type": "auth", "token": "not-a-jwt"})
            assert peer.recv()["code"] == "unauthorized"
            close = peer.closed_with()
            assert (close.code, close.detail) == (4401, "unauthorized")
    await until_metric(server, UNAUTHENTICATED, base)


@pytest.mark.parametrize("refresh", ["expired", "forged", "malformed"])
async def test_a_refresh_with_a_bad_token_closes_the_session_with_4401(server: Server, refresh: str) -> None:
    tenant = await server.tenant()
    bad = {
        "expired": token(server, tenant, ttl_s=-3600),
        # Well-formed and unexpired, with the right claims, signed with a key the server does not hold.
        "forged": TokenVerifier(secrets.token_urlsafe(32), "syncserver", "sync").issue(
            tenant, "dispatcher-1", "dispatcher"
        ),
        "malformed": "not-a-jwt",
    }[refresh]
    reason = "token_expired" if refresh == "expired" else "unauthorized"
    with connected(await server.client.websocket_connect(WS, headers=bearer(server, tenant))) as peer:
        peer.hello()
        peer.catch_up()
        peer.send({"type": "auth", "token": bad})
        assert peer.recv_type("error")["code"] == reason  # the explanation arrives before the close
        close = peer.closed_with()
        assert (close.code, close.detail) == (4401, reason)


async def test_a_refresh_with_a_good_token_keeps_the_session(server: Server) -> None:
    tenant = await server.tenant()
    with connected(await server.client.websocket_connect(WS, headers=bearer(server, tenant))) as peer:
        peer.hello()
        peer.catch_up()
        peer.send({"type": "auth", "token": token(server, tenant, ttl_s=3600)})
        peer.send({"type": "ping", "id": "after-refresh"})
        assert peer.recv_type("pong") == {"type": "pong", "id": "after-refresh"}


@pytest.fixture
async def strict_server(tmp_path: Path) -> AsyncIterator[Server]:
    """No leeway, and a hub whose periodic checks are minutes apart: only the push itself can notice expiry."""
    live = LiveSettings(heartbeat_ms=600_000, idle_timeout_ms=600_000, resync_ms=600_000)
    async for s in start(make_settings(tmp_path, "memory://", live=live, jwt_leeway_s=0)):
        yield s


async def test_a_push_after_the_token_expired_is_refused_and_closes_the_session(strict_server: Server) -> None:
    server = strict_server
    tenant = await server.tenant()
    # A token's exp is a whole second (issued second + ttl): issued just after a second begins, this one lives
    # about 2 s, long enough to connect and say hello on a busy machine (a 1 s token issued late in its second
    # could expire before the hello).
    await asyncio.sleep(1.01 - time.time() % 1)
    issued = time.time()
    with connected(await server.client.websocket_connect(WS, headers=bearer(server, tenant, ttl_s=2))) as peer:
        peer.hello()
        peer.catch_up()
        # Wait for the wall clock to pass the token's exp, not for the server.
        await asyncio.sleep(max(0.0, int(issued) + 3 - time.time()))
        late = change(1, "dlv-late", [{"op": "set", "field": "status", "value": "delivered"}])
        peer.send({"type": "push", "id": "p-late", "replica": "phone-1", "changes": [late]})
        error = peer.recv_type("error")
        assert (error["code"], error.get("id")) == ("token_expired", "p-late")
        close = peer.closed_with()
        assert (close.code, close.detail) == (4401, "token_expired")
    pulled, _ = await server.pull_all(server.headers(tenant, "dispatcher-1"))
    assert pulled == []  # nothing of the late push was applied
