"""The SDK over the live channel of a real server process (uvicorn, SQLite): push, stream, fallback, restart."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from syncclient import (
    ConnectionChanged,
    Event,
    LiveParams,
    RemoteChange,
    ServerError,
    SyncClient,
    TransportError,
    WebSocketTransport,
    connect_websocket,
)
from syncproto.messages import Duplicate, PushRequest
from tests.sdk.conftest import SCHEMA, ServerProcess, assert_exactly_once

WAIT_S = 20.0


async def until(predicate: Callable[[], object], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def client(server: ServerProcess, tmp: Path, replica: str, sub: str, **kwargs: object) -> SyncClient:
    """A client with the default transports: the WebSocket channel first, HTTP as fallback."""
    return SyncClient(
        server.url, server.token(sub), replica, tmp / f"{replica}.db", schema=SCHEMA, sync_interval=60, **kwargs
    )


async def test_start_goes_live_over_the_websocket_and_sees_remote_writes_without_polling(
    real_server: ServerProcess, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    driver = client(real_server, tmp_path, f"phone-{tag}", f"driver-{tag}")
    dispatcher = client(real_server, tmp_path, f"web-{tag}", f"dispatch-{tag}")
    events: list[Event] = []
    dispatcher.subscribe(events.append)
    driver.start()
    dispatcher.start()
    try:
        await until(lambda: ConnectionChanged("online", "ws") in events, "the dispatcher to go live over ws")

        entity = f"dlv-{tag}"
        driver.collection("deliveries").set(entity, status="delivered", driver_id=f"driver-{tag}")
        driver.collection("deliveries").inc(entity, "cod_cents", 4200)
        sent = time.monotonic()
        # sync_interval is 60 s: only the live channel's push can bring this in time.
        await until(
            lambda: (
                dispatcher.collection("deliveries").get(entity)
                == {"status": "delivered", "driver_id": f"driver-{tag}", "cod_cents": 4200}
            ),
            "the driver's write to reach the dispatcher",
        )
        assert time.monotonic() - sent < 5.0
        assert any(isinstance(e, RemoteChange) and e.entity == entity for e in events)
        await until(lambda: driver.pending_count() == 0, "the driver's outbox to drain over ws")
    finally:
        await driver.aclose()
        await dispatcher.aclose()
    log = await real_server.change_log()
    assert_exactly_once(log, f"phone-{tag}")
    assert [c.replica_id for c in log].count(f"phone-{tag}") == 2


async def test_push_over_the_socket_answers_like_http_and_streams_the_change_back(
    real_server: ServerProcess, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    phone = client(real_server, tmp_path, f"phone-{tag}", f"driver-{tag}")
    transport = await connect_websocket(
        LiveParams(real_server.url, real_server.token(f"driver-{tag}"), f"phone-{tag}", None)
    )
    try:
        assert isinstance(transport, WebSocketTransport)
        change = phone.collection("deliveries").set(f"dlv-{tag}", status="pending", driver_id=f"driver-{tag}")
        stats = await phone._sync_via(transport)  # one round trip, entirely over the socket
        assert (stats.applied, stats.rejected) == (1, 0)
        assert phone.pending_count() == 0
        # The round trip ends only once the change came back on the stream, as a pull would bring it:
        # the outbox row is dropped and the read shows the server's state, never a gap between the two.
        assert phone.store.outbox_size() == 0
        assert phone.collection("deliveries").get(f"dlv-{tag}") == {"status": "pending", "driver_id": f"driver-{tag}"}

        # A replay is a duplicate, exactly as over HTTP.
        replay = await transport.push(PushRequest(f"phone-{tag}", [change]))
        assert replay.results == [Duplicate(change.id, change.n)]
    finally:
        await transport.aclose()
        await phone.aclose()


async def test_a_bad_token_is_refused_with_the_servers_code(real_server: ServerProcess) -> None:
    with pytest.raises(ServerError) as refused:
        await connect_websocket(LiveParams(real_server.url, "not-a-token", "phone-x", None))
    assert (refused.value.status, refused.value.code, refused.value.retryable) == (401, "unauthorized", False)


async def test_a_foreign_cursor_is_refused_with_invalid_cursor(real_server: ServerProcess) -> None:
    with pytest.raises(ServerError) as refused:
        await connect_websocket(LiveParams(real_server.url, real_server.token("driver-9"), "phone-9", "bogus"))
    assert refused.value.code == "invalid_cursor"


async def test_unreachable_server_is_a_transport_error() -> None:
    from syncserver.testing import free_port

    with pytest.raises(TransportError):
        await connect_websocket(LiveParams(f"http://127.0.0.1:{free_port()}", "tok", "phone-x", None))


@pytest.mark.slow
async def test_the_live_session_survives_a_server_kill_and_restart_with_nothing_lost(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "srv")
    await asyncio.to_thread(server.start)
    phone = client(server, tmp_path, "phone-a", "driver-17")
    web = client(server, tmp_path, "web-1", "dispatcher-1")
    events: list[Event] = []
    web.subscribe(events.append, ConnectionChanged)
    phone.start()
    web.start()
    try:
        await until(lambda: ConnectionChanged("online", "ws") in events, "the dispatcher to go live")
        d = phone.collection("deliveries")
        for i in range(50):
            d.set(f"dlv-{i}", status="pending", driver_id="driver-17")
        await until(lambda: phone.pending_count() == 0, "the first writes to drain")

        server.kill()
        await until(lambda: any(e.state == "offline" for e in events), "the dispatcher to notice the kill")
        for i in range(50, 100):
            d.set(f"dlv-{i}", status="pending", driver_id="driver-17")  # queued while the server is down
        await asyncio.to_thread(server.start)
        web.notify_online()
        phone.notify_online()

        await until(lambda: len(web.collection("deliveries").list()) == 100, "every write to reach the dispatcher")
        assert events.count(ConnectionChanged("online", "ws")) >= 2  # back on the live channel
    finally:
        await phone.aclose()
        await web.aclose()
        server.stop()
    assert_exactly_once(await server.change_log(), "phone-a")


async def test_a_messagepack_session_pushes_and_streams_like_json(real_server: ServerProcess, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    phone = client(real_server, tmp_path, f"phone-{tag}", f"driver-{tag}")
    params = LiveParams(real_server.url, real_server.token(f"driver-{tag}"), f"phone-{tag}", None)
    transport = await connect_websocket(params, encoding="msgpack")
    try:
        phone.collection("deliveries").set(f"dlv-{tag}", status="pending", driver_id=f"driver-{tag}", note="é🚚")
        stats = await phone._sync_via(transport)
        assert (stats.applied, stats.rejected) == (1, 0)
        assert phone.store.outbox_size() == 0  # the echo came back, in a binary frame
        assert phone.collection("deliveries").get(f"dlv-{tag}") == {
            "status": "pending",
            "driver_id": f"driver-{tag}",
            "note": "é🚚",
        }
    finally:
        await transport.aclose()
        await phone.aclose()


@pytest.mark.slow
async def test_set_token_keeps_the_live_session_past_the_old_tokens_expiry(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "srv")
    server.env["SYNC_JWT_LEEWAY_S"] = "0"  # the session ends the second its token does
    await asyncio.to_thread(server.start)
    short = {name: server.verifier.issue(server.tenant, name, "dispatcher", ttl_s=4) for name in ("kept", "lapsed")}
    clients = {
        name: SyncClient(server.url, token, f"web-{name}", tmp_path / f"{name}.db", schema=SCHEMA, sync_interval=60)
        for name, token in short.items()
    }
    events: dict[str, list[Event]] = {name: [] for name in clients}
    try:
        for name, c in clients.items():
            c.subscribe(events[name].append, ConnectionChanged)
            c.start()
        for name in clients:
            await until(lambda name=name: ConnectionChanged("online", "ws") in events[name], f"{name} to go live")
        clients["kept"].set_token(server.verifier.issue(server.tenant, "kept", "dispatcher"))

        # The session that was not refreshed is closed when its token expires (4401 token_expired) ...
        await until(lambda: any(e.state == "offline" for e in events["lapsed"]), "the lapsed session to end", 15)
        lapsed = next(e for e in events["lapsed"] if e.state == "offline")
        assert lapsed.error is not None
        assert "token_expired" in lapsed.error
        # ... the refreshed one stays open and still syncs live.
        clients["kept"].collection("deliveries").set("dlv-1", status="pending")
        await until(lambda: clients["kept"].pending_count() == 0, "a write over the refreshed session")
        assert [e.state for e in events["kept"]] == ["connecting", "online"]
    finally:
        for c in clients.values():
            await c.aclose()
        server.stop()
