"""The WebSocket transport's handling of each server frame, against a scripted socket.

The server side is a queue of frames, so every branch (catch-up paging,
``synced``, ``reset``, push correlation, errors, close codes, a reader that
falls behind, a cursor that left the stream) is exercised deterministically.
``test_ws_transport.py`` runs the same transport against a real server.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

from syncclient import LiveParams, ServerError, TransportError
from syncclient.transport import ws
from syncproto.messages import (
    Applied,
    Change,
    EntityView,
    ErrorBody,
    Eviction,
    FieldView,
    PullRequest,
    PushRequest,
    Rejected,
    Unavailable,
    WsChanges,
    WsError,
    WsPing,
    WsPushResult,
    WsReset,
    WsServerMessage,
    WsSynced,
    WsWelcome,
    json_encoder,
    ws_client_json_decoder,
)

PARAMS = LiveParams("http://sync.example", "tok", "phone-a", "c0")


class ScriptedSocket:
    """Stands in for ``websockets``' ``ClientConnection``: frames the test feeds, frames the client sent."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[str | Close] = asyncio.Queue()
        self.sent: list[Any] = []
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self.idle = asyncio.Event()  # set while the client's reader waits on an empty inbox

    def feed(self, *messages: WsServerMessage) -> None:
        self.idle.clear()
        for m in messages:
            self.inbox.put_nowait(json_encoder.encode(m).decode())

    def close_with(self, code: int, reason: str) -> None:
        self.idle.clear()
        self.inbox.put_nowait(Close(code, reason))

    async def handled(self) -> None:
        """Wait until the client has handled every frame fed so far and waits for the next one."""
        await asyncio.wait_for(self.idle.wait(), 5)
        await asyncio.sleep(0)  # one more turn: a task started just before runs up to where it waits

    async def sent_count(self, n: int) -> Any:
        """Wait until the client has sent ``n`` frames (the hello included); return the last."""
        async with asyncio.timeout(5):
            while len(self.sent) < n:
                await asyncio.sleep(0)
        return self.sent[-1]

    async def recv(self) -> str:
        if self.inbox.empty():
            self.idle.set()
        item = await self.inbox.get()
        if isinstance(item, Close):
            self.close_code = item.code
            self.closed.set()
            raise ConnectionClosed(item, None)
        return item

    async def send(self, data: str) -> None:
        if self.closed.is_set():
            raise ConnectionClosed(Close(1000, ""), None)
        self.sent.append(ws_client_json_decoder.decode(data))

    async def close(self) -> None:
        self.closed.set()

    async def wait_closed(self) -> None:
        # As websockets does in the background: read on until the server's close frame.
        while not self.closed.is_set():
            with contextlib.suppress(ConnectionClosed):
                await self.recv()


def view(entity: str, seq: int) -> EntityView:
    return EntityView("deliveries", entity, seq, {"srv": seq}, False, {"status": FieldView("register", "pending")})


def welcome(cursor: str | None = "c0") -> WsWelcome:
    return WsWelcome(1, "json", cursor, heartbeat_ms=20_000, idle_timeout_ms=60_000)


async def opened(
    monkeypatch: pytest.MonkeyPatch, *first: WsServerMessage, **options: Any
) -> tuple[Any, ScriptedSocket]:
    socket = ScriptedSocket()
    socket.feed(*first)
    seen: dict[str, Any] = {}

    async def fake_connect(url: str, **kwargs: Any) -> ScriptedSocket:
        seen.update(url=url, **kwargs)
        return socket

    monkeypatch.setattr(ws, "connect", fake_connect)
    transport = await ws.connect_websocket(PARAMS, **options)
    assert seen["url"] == "ws://sync.example/v1/sync/ws"
    assert seen["additional_headers"] == {"Authorization": "Bearer tok"}  # never in the URL
    hello = socket.sent[0]
    assert (hello.versions, hello.replica, hello.cursor) == ([1], "phone-a", "c0")
    return transport, socket


async def test_catch_up_pages_say_more_until_synced_then_live_frames_wake_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t, socket = await opened(monkeypatch, welcome(), WsChanges([view("a", 1)], "c1", more=True))
    first = await t.pull(PullRequest(cursor="c0"))
    assert ([v.entity for v in first.changes], first.cursor, first.more) == (["a"], "c1", True)

    async def later() -> None:
        await socket.handled()  # the pull below is waiting by now: nothing fed, catch-up unfinished
        socket.feed(WsChanges([view("b", 2)], "c2"), WsSynced("c2"))

    feeder = asyncio.create_task(later())
    second = await t.pull(PullRequest(cursor="c1"))  # waits: catch-up is not finished
    await feeder
    assert ([v.entity for v in second.changes], second.cursor) == (["b"], "c2")
    last = await t.pull(PullRequest(cursor="c2"))
    assert (last.changes, last.cursor, last.more) == ([], "c2", False)

    assert await t.wait_for_changes(0.05) is False
    socket.feed(WsChanges([view("c", 3)], "c3"))
    assert await t.wait_for_changes(5) is True
    live = await t.pull(PullRequest(cursor="c2"))
    assert ([v.entity for v in live.changes], live.more) == (["c"], False)
    await t.aclose()


async def test_reset_becomes_a_reset_page_and_the_stream_restarts_from_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t, _ = await opened(monkeypatch, welcome(), WsReset(), WsChanges([view("a", 1)], "c1"), WsSynced("c1"))
    assert (await t.pull(PullRequest(cursor="c0"))).reset is True
    entities, cursor, more = [], None, True  # the client dropped its state, as the protocol says
    while more:
        page = await t.pull(PullRequest(cursor=cursor))
        entities += [v.entity for v in page.changes]
        cursor, more = page.cursor, page.more
    assert (entities, cursor) == (["a"], "c1")
    await t.aclose()


async def test_a_cursor_that_left_the_stream_ends_the_session(monkeypatch: pytest.MonkeyPatch) -> None:
    t, socket = await opened(monkeypatch, welcome(), WsSynced("c0"))
    with pytest.raises(TransportError, match="cursor"):
        await t.pull(PullRequest(cursor=None))
    assert socket.closed.is_set()
    with pytest.raises(TransportError):
        await t.wait_for_changes(1)
    await t.aclose()


async def test_push_results_are_matched_by_id_and_errors_carry_the_http_status(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t, socket = await opened(monkeypatch, welcome())
    change = Change("11111111-1111-4111-8111-111111111111", 1, "deliveries", "a", (1, 0), {}, [])
    pushing = asyncio.create_task(t.push(PushRequest("phone-a", [change])))
    push = await socket.sent_count(2)
    assert (push.id, push.replica, [c.id for c in push.changes]) == ("p-1", "phone-a", [change.id])
    socket.feed(WsPushResult("other", []))  # someone else's id: ignored
    socket.feed(WsPushResult(push.id, [Applied(change.id, 1, seq=7)]))
    assert (await pushing).results == [Applied(change.id, 1, seq=7)]

    too_big = asyncio.create_task(t.push(PushRequest("phone-a", [change])))
    await socket.sent_count(3)
    socket.feed(WsError("too_many_changes", "split it", id=socket.sent[-1].id))
    with pytest.raises(ServerError) as refused:
        await too_big
    assert (refused.value.status, refused.value.code) == (413, "too_many_changes")  # the SDK halves its batch
    assert refused.value.retry_after is None

    limited = asyncio.create_task(t.push(PushRequest("phone-a", [change])))
    await socket.sent_count(4)
    socket.feed(WsError("rate_limited", "slow down", id=socket.sent[-1].id, retry_after=3))
    with pytest.raises(ServerError) as slowed:
        await limited
    assert (slowed.value.status, slowed.value.code, slowed.value.retry_after) == (429, "rate_limited", 3.0)

    rejected = Rejected(change.id, 1, ErrorBody("forbidden", "not yours"))
    third = asyncio.create_task(t.push(PushRequest("phone-a", [change])))
    await socket.sent_count(5)
    socket.feed(WsPushResult(socket.sent[-1].id, [rejected]))
    assert (await third).results == [rejected]
    await t.aclose()


async def test_pings_are_answered_and_a_dropped_connection_fails_pending_pushes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t, socket = await opened(monkeypatch, welcome(), WsPing("h-1"))
    await socket.handled()
    assert [(type(m).__name__, m.id) for m in socket.sent[1:]] == [("WsPong", "h-1")]
    change = Change("11111111-1111-4111-8111-111111111111", 1, "deliveries", "a", (1, 0), {}, [])
    pushing = asyncio.create_task(t.push(PushRequest("phone-a", [change])))
    await socket.sent_count(3)
    socket.close_with(1012, "")  # the server restarts
    with pytest.raises(TransportError, match="1012"):
        await pushing
    with pytest.raises(TransportError):
        await t.wait_for_changes(1)


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (4401, "token_expired", ServerError),
        (4403, "forbidden", ServerError),
        (4429, "too_many_connections", TransportError),
        (1001, "going_away", TransportError),
    ],
)
async def test_close_codes_map_to_retry_or_fix(
    monkeypatch: pytest.MonkeyPatch, code: int, reason: str, expected: type[Exception]
) -> None:
    t, socket = await opened(monkeypatch, welcome())
    socket.close_with(code, reason)
    with pytest.raises(expected) as raised:
        await t.wait_for_changes(5)
    if isinstance(raised.value, ServerError):
        assert (raised.value.code, raised.value.retryable) == (reason, False)


async def test_a_handshake_refusal_raises_with_the_close_codes_status(monkeypatch: pytest.MonkeyPatch) -> None:
    socket = ScriptedSocket()
    socket.feed(WsError("version_unsupported", "this server speaks [1]"))
    socket.close_with(4426, "version_unsupported")

    async def fake_connect(url: str, **kwargs: Any) -> ScriptedSocket:
        return socket

    monkeypatch.setattr(ws, "connect", fake_connect)

    with pytest.raises(ServerError) as refused:
        await ws.connect_websocket(PARAMS)
    assert (refused.value.status, refused.value.code) == (426, "version_unsupported")


async def test_a_reader_that_falls_behind_drops_frames_and_reconnects_from_its_cursor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t, socket = await opened(monkeypatch, welcome(), max_buffered_frames=3)
    socket.feed(*(WsChanges([view(f"e{i}", i)], f"c{i}", more=True) for i in range(1, 10)))
    assert await t.wait_for_changes(5) is True
    await socket.handled()  # all nine frames read
    assert len(t._buffer) <= 3  # bounded, whatever the server sends
    with pytest.raises(TransportError, match="fell behind"):
        await t.pull(PullRequest(cursor="c0"))


def test_ws_urls_keep_a_path_prefix_and_refuse_other_schemes() -> None:
    assert ws.ws_url("https://sync.example/api/") == "wss://sync.example/api/v1/sync/ws"
    assert ws.ws_url("http://127.0.0.1:8000") == "ws://127.0.0.1:8000/v1/sync/ws"
    with pytest.raises(ValueError, match="not an http"):
        ws.ws_url("ftp://sync.example")


def test_frames_the_scripted_socket_sends_are_valid_server_messages() -> None:
    # Guards the fixture itself: a frame the real decoder rejects would make these tests vacuous.
    frame = json_encoder.encode(WsChanges([view("a", 1)], "c1"))
    assert isinstance(msgspec.json.decode(frame, type=WsServerMessage), WsChanges)


async def test_a_pull_does_not_end_before_the_pushed_changes_come_back_on_the_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t, socket = await opened(monkeypatch, welcome(), WsSynced("c0"))
    change = Change("11111111-1111-4111-8111-111111111111", 1, "deliveries", "a", (1, 0), {}, [])
    pushing = asyncio.create_task(t.push(PushRequest("phone-a", [change])))
    await socket.sent_count(2)
    socket.feed(WsPushResult(socket.sent[-1].id, [Applied(change.id, 1, seq=7)]))
    await pushing

    # The round trip drops acknowledged outbox rows when the pull ends, so it must not end
    # (``more=False``) before the stream has brought the pushed entity back, even after ``synced``.
    async def echo() -> None:
        await socket.handled()  # the first pull below waits for the echo by now
        socket.feed(WsChanges([view("b", 6)], "c6"), WsChanges([view("a", 7)], "c7"))

    feeder = asyncio.create_task(echo())
    pages = []
    cursor: str | None = "c0"
    while True:
        page = await t.pull(PullRequest(cursor=cursor))
        pages.append(page)
        cursor = page.cursor
        if not page.more:
            break
    await feeder
    assert [v.entity for p in pages for v in p.changes] == ["b", "a"]
    assert cursor == "c7"
    await t.aclose()


async def test_an_eviction_also_settles_a_pushed_change(monkeypatch: pytest.MonkeyPatch) -> None:
    t, socket = await opened(monkeypatch, welcome(), WsSynced("c0"))
    change = Change("11111111-1111-4111-8111-111111111111", 1, "deliveries", "a", (1, 0), {}, [])
    pushing = asyncio.create_task(t.push(PushRequest("phone-a", [change])))
    await socket.sent_count(2)
    socket.feed(WsPushResult(socket.sent[-1].id, [Applied(change.id, 1, seq=7)]))
    await pushing
    socket.feed(WsChanges([], "c7", evictions=[Eviction("deliveries", "a", 7)]))  # the push moved it out of scope
    page = await t.pull(PullRequest(cursor="c0"))
    while page.more:
        page = await t.pull(PullRequest(cursor=page.cursor))
    assert page.cursor == "c7"
    await t.aclose()


async def test_a_frames_unavailable_entities_reach_the_page_and_settle_a_pushed_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t, socket = await opened(monkeypatch, welcome(), WsSynced("c0"))
    change = Change("11111111-1111-4111-8111-111111111111", 1, "deliveries", "a", (1, 0), {}, [])
    pushing = asyncio.create_task(t.push(PushRequest("phone-a", [change])))
    await socket.sent_count(2)
    socket.feed(WsPushResult(socket.sent[-1].id, [Applied(change.id, 1, seq=7)]))
    await pushing
    # The server cannot read the pushed entity back: the frame names it instead of sending it.
    bad = Unavailable("deliveries", "a", 7, "data_integrity")
    socket.feed(WsChanges([view("b", 6)], "c7", unavailable=[bad]))
    async with asyncio.timeout(5):  # no echo to wait for: the page ends the pull
        page = await t.pull(PullRequest(cursor="c0"))
    assert (page.unavailable, [v.entity for v in page.changes], page.cursor, page.more) == ([bad], ["b"], "c7", False)
    socket.feed(WsChanges([view("c", 8)], "c8"))
    page = await t.pull(PullRequest(cursor="c7"))
    assert page.unavailable is msgspec.UNSET  # absent when the frame has none
    await t.aclose()
