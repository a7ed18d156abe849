"""The WebSocket channel in-process (Litestar's test client): handshake, catch-up, live, push, auth, limits."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from queue import Empty
from typing import Any

import msgspec
import pytest
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import WebSocketTestSession

from syncserver.auth.tokens import Role
from syncserver.settings import LiveSettings
from tests.integration.conftest import Server, change, make_settings, start

WS = "/v1/sync/ws"
TIMEOUT = 10.0


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    live = LiveSettings(max_connections=4, max_connections_per_user=2, handshake_timeout_ms=1000)
    async for s in start(make_settings(tmp_path, "memory://", live=live)):
        yield s


def token(server: Server, tenant: str, sub: str = "dispatcher-1", role: Role = "dispatcher", **kwargs: Any) -> str:
    return server.verifier.issue(tenant, sub, role, **kwargs)


def bearer(
    server: Server, tenant: str, sub: str = "dispatcher-1", role: Role = "dispatcher", **kw: Any
) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(server, tenant, sub, role, **kw)}"}


class Peer:
    """A test-side WebSocket speaking JSON or MessagePack."""

    def __init__(self, session: WebSocketTestSession, encoding: str = "json") -> None:
        self.session = session
        self.encoding = encoding

    def send(self, message: dict[str, Any]) -> None:
        if self.encoding == "msgpack":
            self.session.send_bytes(msgspec.msgpack.encode(message))
        else:
            self.session.send_text(msgspec.json.encode(message).decode())

    def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        event: dict[str, Any] = dict(self.session.receive(timeout=timeout))
        if event.get("bytes") is not None:
            assert self.encoding == "msgpack", "a binary frame on a JSON session"
            result: dict[str, Any] = msgspec.msgpack.decode(event["bytes"])
        else:
            assert self.encoding == "json", "a text frame on a msgpack session"
            result = msgspec.json.decode(event["text"])
        return result

    def recv_type(self, kind: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next message of ``kind``, answering pings and skipping the change stream on the way."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.recv(max(0.01, deadline - time.monotonic()))
            if message["type"] == kind:
                return message
            if message["type"] == "ping":
                self.send({"type": "pong", "id": message.get("id")})
            elif message["type"] not in ("changes", "synced"):
                raise AssertionError(f"expected {kind}, got {message}")

    def hello(self, **fields: Any) -> dict[str, Any]:
        self.send({"type": "hello", "versions": [1], "encoding": self.encoding, **fields})
        welcome = self.recv()
        assert welcome["type"] == "welcome", welcome
        return welcome

    def catch_up(self) -> tuple[list[dict[str, Any]], str | None]:
        """Every entity streamed until ``synced``, and the synced cursor."""
        entities: list[dict[str, Any]] = []
        while True:
            message = self.recv()
            if message["type"] == "synced":
                return entities, message["cursor"]
            assert message["type"] == "changes", message
            entities += message["changes"]

    def closed_with(self) -> WebSocketDisconnect:
        """Read until the server closes; return the close."""
        with pytest.raises(WebSocketDisconnect) as info:
            self.drain()
        return info.value

    def drain(self) -> None:
        """Read (pings included, unanswered) until the socket closes; raises ``WebSocketDisconnect``."""
        for _ in range(1000):
            self.recv()
        raise AssertionError("the server never closed the socket")


@contextmanager
def connected(session: WebSocketTestSession, encoding: str = "json") -> Iterator[Peer]:
    with session:
        yield Peer(session, encoding)


def status(n: int, entity: str, value: str = "pending", **kw: Any) -> dict[str, Any]:
    return change(n, entity, [{"op": "set", "field": "status", "value": value}], **kw)


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_hello_welcome_catch_up_then_live(server: Server, encoding: str) -> None:
    tenant = await server.tenant()
    headers = bearer(server, tenant)
    await server.push(headers, "web-1", [status(1, "dlv-1"), status(2, "dlv-2")])

    with connected(await server.client.websocket_connect(WS, headers=headers), encoding) as peer:
        welcome = peer.hello(replica="phone-1")
        assert welcome["version"] == 1
        assert welcome["encoding"] == encoding
        caught_up, cursor = peer.catch_up()
        assert [(e["entity"], e["seq"]) for e in caught_up] == [("dlv-1", 1), ("dlv-2", 2)]

        await server.push(headers, "web-1", [status(3, "dlv-3", "delivered")])
        live = peer.recv_type("changes")
        assert [(e["entity"], e["seq"], e["fields"]["status"]["value"]) for e in live["changes"]] == [
            ("dlv-3", 3, "delivered")
        ]
        assert live["cursor"] != cursor

        # The same live frame is what an HTTP pull from the synced cursor returns.
        pulled, _ = await server.pull_all(headers, cursor)
        assert pulled == live["changes"]


async def test_catch_up_is_what_http_pull_returns_from_the_same_cursor(server: Server) -> None:
    tenant = await server.tenant()
    headers = bearer(server, tenant)
    await server.push(headers, "web-1", [status(n, f"dlv-{n % 7}", f"v{n}") for n in range(1, 21)])
    _, middle = await server.pull_all(headers)
    await server.push(
        headers,
        "web-1",
        [change(n, f"dlv-{n % 5}", [{"op": "inc", "field": "cod_cents", "by": n}]) for n in range(21, 31)],
    )
    for start_cursor in (None, middle):
        expected, expected_cursor = await server.pull_all(headers, start_cursor)
        with connected(await server.client.websocket_connect(WS, headers=headers)) as peer:
            peer.hello(cursor=start_cursor)
            got, cursor = peer.catch_up()
        assert got == expected
        assert cursor == expected_cursor


async def test_push_over_websocket_returns_the_same_results_as_http(server: Server) -> None:
    def batch() -> list[dict[str, Any]]:
        first = status(1, "dlv-1", "pending")
        return [
            first,
            first,  # duplicate within the batch
            status(3, "dlv-2"),  # out of order: 2 is missing
            change(2, "dlv-1", [{"op": "inc", "field": "status", "by": 1}]),  # kind mismatch: rejected
            change(3, "dlv-3", [{"op": "add", "field": "scanned", "value": "parcel-9"}]),
        ]

    changes = batch()
    over_http, over_ws = await server.tenant("http"), await server.tenant("ws")
    http_results = await server.push(bearer(server, over_http), "phone-1", changes)

    with connected(await server.client.websocket_connect(WS, headers=bearer(server, over_ws))) as peer:
        peer.hello()
        peer.catch_up()
        peer.send({"type": "push", "id": "p-1", "replica": "phone-1", "changes": changes})
        result = peer.recv_type("push_result")
    assert result["id"] == "p-1"
    assert result["protocol"] == 1
    assert [r["status"] for r in http_results] == ["applied", "duplicate", "out_of_order", "rejected", "applied"]
    assert result["results"] == http_results


async def test_push_errors_carry_the_correlation_id_and_keep_the_session(server: Server) -> None:
    tenant = await server.tenant()
    with connected(await server.client.websocket_connect(WS, headers=bearer(server, tenant))) as peer:
        peer.hello()
        peer.catch_up()
        bad = status(1, "dlv-1") | {"n": "one"}
        peer.send({"type": "push", "id": "p-9", "replica": "phone-1", "changes": [bad]})
        error = peer.recv_type("error")
        assert (error["code"], error["id"]) == ("invalid_request", "p-9")
        unknown = change(1, "dlv-1", [{"op": "explode", "field": "status"}])
        peer.send({"type": "push", "id": "p-10", "replica": "phone-1", "changes": [unknown]})
        assert peer.recv_type("error")["code"] == "unknown_op"
        peer.session.send_text("{not json")
        assert peer.recv_type("error")["code"] == "malformed_json"
        peer.send({"type": "ping", "id": "still-here"})
        assert peer.recv_type("pong") == {"type": "pong", "id": "still-here"}


@pytest.mark.parametrize(
    "query",
    ["?token={jwt}", "?access_token={jwt}", "?x={jwt}", "?token=anything"],
    ids=["token", "access_token", "jwt-under-another-name", "token-key-alone"],
)
async def test_a_token_in_the_url_query_is_refused_even_next_to_a_valid_header(server: Server, query: str) -> None:
    tenant = await server.tenant()
    jwt = token(server, tenant)
    for headers in ({}, bearer(server, tenant)):
        session = await server.client.websocket_connect(WS + query.format(jwt=jwt), headers=headers)
        with connected(session) as peer:
            error = peer.recv()
            assert (error["type"], error["code"]) == ("error", "unauthorized")
            assert "URL" in error["message"]
            close = peer.closed_with()
            assert (close.code, close.detail) == (4401, "unauthorized")


async def test_auth_as_first_message_and_as_subprotocol(server: Server) -> None:
    tenant = await server.tenant()
    headers = bearer(server, tenant)
    await server.push(headers, "web-1", [status(1, "dlv-1")])

    with connected(await server.client.websocket_connect(WS)) as peer:
        peer.send({"type": "auth", "token": token(server, tenant)})
        peer.hello()
        assert [e["entity"] for e in peer.catch_up()[0]] == ["dlv-1"]

    offered = ["sync.v1", "bearer." + token(server, tenant)]
    with connected(await server.client.websocket_connect(WS, subprotocols=offered)) as peer:
        assert peer.session.accepted_subprotocol == "sync.v1"  # never the token
        peer.hello()
        assert [e["entity"] for e in peer.catch_up()[0]] == ["dlv-1"]


@pytest.mark.parametrize(
    ("first", "code", "reason"),
    [
        ({"type": "auth", "token": "not-a-jwt"}, 4401, "unauthorized"),
        ({"type": "hello", "versions": [1]}, 4401, "unauthorized"),
        (None, 4408, "timeout"),
    ],
    ids=["bad-token", "hello-before-auth", "silence"],
)
async def test_unauthenticated_sessions_are_closed(
    server: Server, first: dict[str, Any] | None, code: int, reason: str
) -> None:
    with connected(await server.client.websocket_connect(WS)) as peer:
        if first is not None:
            peer.send(first)
        assert peer.recv()["code"] == reason
        close = peer.closed_with()
        assert (close.code, close.detail) == (code, reason)


async def test_expired_and_foreign_tokens_are_refused(server: Server) -> None:
    tenant = await server.tenant()
    expired = token(server, tenant, ttl_s=-3600)
    with connected(await server.client.websocket_connect(WS)) as peer:
        peer.send({"type": "auth", "token": expired})
        close = peer.closed_with()
        assert (close.code, close.detail) == (4401, "token_expired")
    ghost = {"Authorization": f"Bearer {server.verifier.issue('no-such-tenant', 'd', 'driver')}"}
    with connected(await server.client.websocket_connect(WS, headers=ghost)) as peer:
        close = peer.closed_with()
        assert (close.code, close.detail) == (4401, "tenant_unknown")


async def test_version_negotiation_picks_a_shared_version_or_refuses(server: Server) -> None:
    tenant = await server.tenant()
    with connected(await server.client.websocket_connect(WS, headers=bearer(server, tenant))) as peer:
        peer.send({"type": "hello", "versions": [3, 1, 2], "future_field": True})
        assert peer.recv()["version"] == 1
    with connected(await server.client.websocket_connect(WS, headers=bearer(server, tenant))) as peer:
        peer.send({"type": "hello", "versions": [2, 3]})
        error = peer.recv()
        assert (error["code"], "[1]" in error["message"]) == ("version_unsupported", True)
        close = peer.closed_with()
        assert (close.code, close.detail) == (4426, "version_unsupported")


async def test_another_tenants_cursor_is_refused(server: Server) -> None:
    mine, theirs = await server.tenant(), await server.tenant()
    await server.push(bearer(server, theirs), "web-1", [status(1, "dlv-1")])
    _, their_cursor = await server.pull_all(bearer(server, theirs))
    with connected(await server.client.websocket_connect(WS, headers=bearer(server, mine))) as peer:
        peer.send({"type": "hello", "versions": [1], "cursor": their_cursor})
        close = peer.closed_with()
        assert (close.code, close.detail) == (4400, "invalid_cursor")


async def test_only_the_tokens_tenant_and_the_requested_collections_are_delivered(server: Server) -> None:
    mine, other = await server.tenant(), await server.tenant()
    with connected(await server.client.websocket_connect(WS, headers=bearer(server, mine))) as peer:
        peer.hello(collections=["deliveries"])
        peer.catch_up()
        await server.push(bearer(server, other), "web-9", [status(1, "theirs")])
        await server.push(
            bearer(server, mine),
            "web-1",
            [change(1, "note-1", [{"op": "set", "field": "x", "value": 1}], collection="notes"), status(2, "mine")],
        )
        live = peer.recv_type("changes")
        assert [(e["collection"], e["entity"]) for e in live["changes"]] == [("deliveries", "mine")]


async def test_per_user_and_total_connection_limits(server: Server) -> None:
    tenant = await server.tenant()

    async def open_peer(sub: str) -> tuple[WebSocketTestSession, Peer]:
        session = await server.client.websocket_connect(WS, headers=bearer(server, tenant, sub))
        session.__enter__()
        return session, Peer(session)

    opened = []
    try:
        for sub in ("u1", "u1"):
            session, peer = await open_peer(sub)
            opened.append(session)
            peer.hello()
        session, peer = await open_peer("u1")  # a third for u1: over the per-user limit of 2
        opened.append(session)
        assert peer.recv()["code"] == "too_many_connections"
        assert peer.closed_with().code == 4429
        for sub in ("u2", "u3"):  # total limit is 4
            session, peer = await open_peer(sub)
            opened.append(session)
            peer.hello()
        session, peer = await open_peer("u4")
        opened.append(session)
        assert peer.closed_with().code == 4429

        opened[0].__exit__(None, None, None)  # one of u1's closes; u1 gets a slot back
        opened.pop(0)
        deadline = time.monotonic() + TIMEOUT
        while True:  # the server releases the slot when it sees the disconnect
            session, peer = await open_peer("u1")
            opened.append(session)
            peer.send({"type": "hello", "versions": [1]})
            first = peer.recv()
            if first["type"] == "welcome" or time.monotonic() > deadline:
                break
        assert first["type"] == "welcome"
    finally:
        for session in opened:
            session.__exit__(None, None, None)


@pytest.fixture
async def fast_heartbeat(tmp_path: Path) -> AsyncIterator[Server]:
    live = LiveSettings(heartbeat_ms=100, idle_timeout_ms=500)
    async for s in start(make_settings(tmp_path, "memory://", live=live)):
        yield s


async def test_heartbeat_closes_a_silent_peer_and_keeps_a_responsive_one(fast_heartbeat: Server) -> None:
    server = fast_heartbeat
    tenant = await server.tenant()
    with connected(await server.client.websocket_connect(WS, headers=bearer(server, tenant))) as silent:
        silent.hello()
        began = time.monotonic()
        pings = []

        def read_silently() -> None:
            while True:
                pings.append(silent.recv()["type"] == "ping")

        with pytest.raises(WebSocketDisconnect) as info:
            read_silently()
        assert (info.value.code, info.value.detail) == (4408, "timeout")
        assert sum(pings) >= 2, "the server sent no heartbeats before giving up"
        assert 0.4 < time.monotonic() - began < 8

    with connected(await server.client.websocket_connect(WS, headers=bearer(server, tenant))) as alive:
        alive.hello()
        until = time.monotonic() + 1.5  # three idle timeouts
        while time.monotonic() < until:
            try:
                message = alive.recv(timeout=0.05)
            except Empty:
                continue
            if message["type"] == "ping":
                alive.send({"type": "pong"})
        alive.send({"type": "ping", "id": "x"})
        assert alive.recv_type("pong")["id"] == "x"


@pytest.fixture
async def quick_resync(tmp_path: Path) -> AsyncIterator[Server]:
    async for s in start(make_settings(tmp_path, "memory://", live=replace(LiveSettings(), resync_ms=200))):
        yield s


async def test_a_lost_notification_only_delays_the_change(quick_resync: Server) -> None:
    server = quick_resync
    tenant = await server.tenant()
    headers = bearer(server, tenant)
    with connected(await server.client.websocket_connect(WS, headers=headers)) as peer:
        peer.hello()
        peer.catch_up()
        server.app.state.push_service.notify = None  # every notification is lost from now on
        await server.push(headers, "web-1", [status(1, "dlv-1")])
        live = peer.recv_type("changes", timeout=TIMEOUT)  # the periodic resync finds it in the log
        assert [e["entity"] for e in live["changes"]] == ["dlv-1"]


async def test_a_driver_gets_only_its_channels_live_with_evictions_exactly_as_http_pull(server: Server) -> None:
    tenant = await server.tenant()
    dispatcher = bearer(server, tenant)
    driver = bearer(server, tenant, "driver-1", "driver", channels=("driver:d1",))

    def assign(n: int, entity: str, who: str) -> dict[str, Any]:
        return change(n, entity, [{"op": "set", "field": "driver_id", "value": who}])

    await server.push(dispatcher, "web-1", [assign(1, "dlv-1", "d1"), assign(2, "dlv-2", "d2")])
    with connected(await server.client.websocket_connect(WS, headers=driver)) as peer:
        peer.hello()
        caught_up, cursor = peer.catch_up()
        assert [e["entity"] for e in caught_up] == ["dlv-1"]

        await server.push(dispatcher, "web-1", [assign(3, "dlv-3", "d1"), assign(4, "dlv-4", "d2")])
        live = peer.recv_type("changes")
        assert [e["entity"] for e in live["changes"]] == ["dlv-3"]
        assert live["evictions"] == []
        pulled = (await server.client.post("/v1/sync/pull", json={"cursor": cursor}, headers=driver)).json()
        assert (pulled["changes"], pulled["cursor"]) == (live["changes"], live["cursor"])

        await server.push(dispatcher, "web-1", [assign(5, "dlv-1", "d2")])  # reassigned: leaves d1's scope
        moved = peer.recv_type("changes")
        assert moved["changes"] == []
        assert [(e["collection"], e["entity"]) for e in moved["evictions"]] == [("deliveries", "dlv-1")]


@pytest.fixture(params=["memory", "sqlite"])
async def two_drivers_server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Server]:
    url = "memory://" if request.param == "memory" else f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}"
    async for s in start(make_settings(tmp_path, url, live=LiveSettings(handshake_timeout_ms=1000))):
        yield s


async def test_a_live_driver_is_woken_only_by_changes_in_its_channels(
    two_drivers_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit wakes a live driver (a scoped pull of its own) only if a row of its channels was written
    after its position: an entity changing in one of them, or leaving it. Before, every commit woke every
    driver of the tenant (benchmarks/README.md, "Live drivers woken only by their channels")."""
    server = two_drivers_server
    tenant = await server.tenant()
    dispatcher = bearer(server, tenant)
    d1 = bearer(server, tenant, "driver-1", "driver", channels=("driver:d1",))
    d2 = bearer(server, tenant, "driver-2", "driver", channels=("driver:d2",))
    pulls: list[str] = []
    service = server.app.state.pull_service
    assert server.app.state.live.pull is service
    real_pull = service.pull

    async def counted(principal: Any, request: Any) -> Any:
        pulls.append(principal.sub)
        return await real_pull(principal, request)

    def assign(n: int, entity: str, who: str, **fields: str) -> dict[str, Any]:
        ops = [{"op": "set", "field": "driver_id", "value": who}]
        ops += [{"op": "set", "field": name, "value": value} for name, value in fields.items()]
        return change(n, entity, ops)

    await server.push(dispatcher, "web-1", [assign(1, "dlv-1", "d1"), assign(2, "dlv-2", "d2")])
    with (
        connected(await server.client.websocket_connect(WS, headers=d1)) as one,
        connected(await server.client.websocket_connect(WS, headers=d2)) as two,
    ):
        one.hello()
        assert [e["entity"] for e in one.catch_up()[0]] == ["dlv-1"]
        two.hello()
        assert [e["entity"] for e in two.catch_up()[0]] == ["dlv-2"]
        monkeypatch.setattr(service, "pull", counted)

        await server.push(dispatcher, "web-1", [assign(3, "dlv-2", "d2", status="loaded")])
        assert [e["entity"] for e in two.recv_type("changes")["changes"]] == ["dlv-2"]
        await server.push(dispatcher, "web-1", [assign(4, "dlv-1", "d1", status="loaded")])
        assert [e["entity"] for e in one.recv_type("changes")["changes"]] == ["dlv-1"]
        assert sorted(pulls) == ["driver-1", "driver-2"], "a driver was woken by a change outside its channels"

        # dlv-2 moves from d2 to d1: d1 gets it whole, d2 its eviction (the row it left by wakes it).
        await server.push(dispatcher, "web-1", [assign(5, "dlv-2", "d1")])
        moved = one.recv_type("changes")
        assert [(e["entity"], e["fields"]["status"]["value"]) for e in moved["changes"]] == [("dlv-2", "loaded")]
        assert [e["entity"] for e in two.recv_type("changes")["evictions"]] == ["dlv-2"]


async def test_a_failed_read_of_the_channel_rows_reads_the_page_again(
    two_drivers_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The feed asks which drivers a page concerns before it moves on: if that read fails, the page is read
    again (after the feed's retry delay) and the driver still gets its change."""
    server = two_drivers_server
    tenant = await server.tenant()
    dispatcher = bearer(server, tenant)
    d1 = bearer(server, tenant, "driver-1", "driver", channels=("driver:d1",))
    access = server.app.state.pull_service.access
    real = access.latest_in_channels
    failures: list[str] = []

    async def failing_once(*args: Any) -> Any:
        if not failures:
            failures.append("failed")
            raise OSError("the database went away for a moment")
        return await real(*args)

    await server.push(dispatcher, "web-1", [change(1, "dlv-1", [{"op": "set", "field": "driver_id", "value": "d1"}])])
    with connected(await server.client.websocket_connect(WS, headers=d1)) as peer:
        peer.hello()
        assert [e["entity"] for e in peer.catch_up()[0]] == ["dlv-1"]
        monkeypatch.setattr(access, "latest_in_channels", failing_once)
        await server.push(
            dispatcher, "web-1", [change(2, "dlv-1", [{"op": "set", "field": "status", "value": "loaded"}])]
        )
        live = peer.recv_type("changes")
        assert [(e["entity"], e["fields"]["status"]["value"]) for e in live["changes"]] == [("dlv-1", "loaded")]
        assert failures == ["failed"]


async def test_a_drivers_live_catch_up_is_one_read_per_page(
    two_drivers_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A driver's catch-up page is its scoped pull alone: the pull reads the tenant's head before its page
    (``scoped_page``), so the hub reads no tenant row of its own for it. Counted in tenant reads and, on
    SQLite, in trips to a reader thread."""
    server = two_drivers_server
    tenant = await server.tenant()
    dispatcher = bearer(server, tenant)
    d1 = bearer(server, tenant, "driver-1", "driver", channels=("driver:d1",))
    d2 = bearer(server, tenant, "driver-2", "driver", channels=("driver:d2",))
    assign = [{"op": "set", "field": "driver_id", "value": "d2"}]
    await server.push(dispatcher, "web-1", [change(1, "dlv-1", assign)])
    store = server.app.state.store
    reader = store.database.reader if hasattr(store, "database") else None
    tenant_reads: list[str] = []
    real_get_tenant = store.get_tenant

    async def counted_get_tenant(tenant_id: str) -> Any:
        tenant_reads.append(tenant_id)
        return await real_get_tenant(tenant_id)

    trips: list[object] = []
    with connected(await server.client.websocket_connect(WS, headers=d1)) as first:
        first.hello()
        first.catch_up()  # the tenant's feed exists from here on
        monkeypatch.setattr(store, "get_tenant", counted_get_tenant)
        if reader is not None:
            real_run = reader.run

            async def counted_run(work: Any) -> Any:
                trips.append(work)
                return await real_run(work)

            monkeypatch.setattr(reader, "run", counted_run)
        with connected(await server.client.websocket_connect(WS, headers=d2)) as second:
            second.hello()
            assert [e["entity"] for e in second.catch_up()[0]] == ["dlv-1"]
    # One tenant read: the session's check, at its handshake, that its token's tenant exists; none per page.
    assert len(tenant_reads) == 1
    if reader is not None:
        assert len(trips) == 2, trips  # that check and the one page's scoped pull


async def test_an_erased_tenants_sockets_close_and_its_feed_keeps_nothing(server: Server) -> None:
    """Erasure crypto-shreds the tenant: its live sessions end as an unknown tenant's, and the pages its feed kept
    in memory (decrypted views and the keys to open its rows) go at once, not at the feed's next read."""
    tenant, other = await server.tenant(), await server.tenant("other")
    headers, admin = bearer(server, tenant), bearer(server, tenant, "ops", "admin")
    hub = server.app.state.live
    with (
        connected(await server.client.websocket_connect(WS, headers=headers)) as peer,
        connected(await server.client.websocket_connect(WS, headers=bearer(server, other))) as neighbour,
    ):
        peer.hello(replica="phone-1")
        neighbour.hello(replica="phone-2")
        peer.catch_up()
        neighbour.catch_up()
        await server.push(headers, "web-1", [status(1, "dlv-1", "SECRET")])
        assert peer.recv_type("changes")["changes"][0]["entity"] == "dlv-1"
        assert hub.feeds[tenant].pages, "the feed keeps the page it read"
        feed = hub.feeds[tenant]

        r = await server.client.post(f"/v1/admin/tenant/erase?confirm={tenant}", headers=admin)
        assert r.status_code == 200, r.text
        close = peer.closed_with()
        assert (close.code, close.detail) == (4401, "tenant_unknown")
        assert tenant not in hub.feeds
        assert not feed.pages
        assert feed.cached_rows == 0
        # Another tenant's session goes on.
        await server.push(bearer(server, other), "web-2", [status(1, "dlv-9")])
        assert neighbour.recv_type("changes")["changes"][0]["entity"] == "dlv-9"


async def test_a_feed_that_finds_its_tenant_gone_closes_its_sessions(quick_resync: Server) -> None:
    """An erase run by another process (the CLI) reaches this one's feed at its next read of the head (here the
    hub's periodic resync, every 200 ms)."""
    server = quick_resync
    tenant = await server.tenant()
    headers = bearer(server, tenant)
    hub = server.app.state.live
    with connected(await server.client.websocket_connect(WS, headers=headers)) as peer:
        peer.hello(replica="phone-1")
        peer.catch_up()
        await server.push(headers, "web-1", [status(1, "dlv-1")])
        peer.recv_type("changes")
        await server.app.state.subject_requests.erase_tenant(tenant, "cli")  # as another process would: no forget
        close = peer.closed_with()
        assert (close.code, close.detail) == (4401, "tenant_unknown")
        assert tenant not in hub.feeds
