"""``start()``: syncs on its own, backs off when offline, honours Retry-After, prefers a live transport."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest

from syncclient import (
    Backoff,
    ConnectionChanged,
    Event,
    LiveParams,
    MemoryServer,
    MockTransport,
    ServerError,
    SyncClient,
    TransportError,
)
from syncclient.background import BackgroundSync
from syncproto import errors
from syncproto.messages import PullRequest, PullResponse, PushRequest, PushResponse

FAST = Backoff(base=0.02, cap=0.2)


async def until(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def states(events: list[Event]) -> list[str]:
    return [e.state for e in events if isinstance(e, ConnectionChanged)]


async def test_background_sync_pushes_local_writes_without_being_asked(tmp_path: Path) -> None:
    server = MemoryServer()
    client = SyncClient(None, None, "phone-a", tmp_path / "a.db", transport=MockTransport(server), sync_interval=60)
    events: list[Event] = []
    client.subscribe(events.append, ConnectionChanged)
    client.start()
    await until(lambda: "online" in states(events))
    change = client.collection("deliveries").set("dlv-1", status="delivered")
    await until(lambda: [e.id for e in server.log] == [change.id])  # woken by the write, not the 60 s poll
    await client.stop()
    assert states(events) == ["connecting", "online", "stopped"]
    assert events[1] == ConnectionChanged("online", "mock")
    await client.aclose()


async def test_network_errors_back_off_then_reconnect_and_sync(tmp_path: Path) -> None:
    server = MemoryServer()
    failures = {"left": 3}
    attempts: list[float] = []

    def handler(request: PushRequest | PullRequest) -> PushResponse | PullResponse:
        attempts.append(time.monotonic())
        if failures["left"]:
            failures["left"] -= 1
            raise TransportError("tunnel")
        return server(request)

    client = SyncClient(None, None, "phone-a", tmp_path / "a.db", transport=MockTransport(handler), backoff=FAST)
    client.collection("deliveries").set("dlv-1", status="delivered")
    events: list[Event] = []
    client.subscribe(events.append, ConnectionChanged)
    client.start()
    await until(lambda: len(server.log) == 1)
    await client.stop()

    offline = [e for e in events if isinstance(e, ConnectionChanged) and e.state == "offline"]
    assert len(offline) == 3
    assert all(e.error is not None and "tunnel" in e.error for e in offline)
    delays = [e.retry_in or 0 for e in offline]
    assert delays[0] < FAST.base * 1.01
    assert delays[2] >= FAST.base * 2  # exponential
    gaps = [b - a for a, b in itertools.pairwise(attempts[:4])]
    assert all(g >= d * 0.9 for g, d in zip(gaps, delays, strict=True))  # it really waited
    assert "online" in states(events)
    await client.aclose()


async def test_429_waits_for_retry_after(tmp_path: Path) -> None:
    server = MemoryServer()
    attempts: list[float] = []

    def handler(request: PushRequest | PullRequest) -> PushResponse | PullResponse:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise ServerError(429, errors.RATE_LIMITED, "slow down", retry_after=0.3)
        return server(request)

    client = SyncClient(None, None, "phone-a", tmp_path / "a.db", transport=MockTransport(handler), backoff=FAST)
    client.collection("deliveries").set("dlv-1", status="delivered")
    events: list[Event] = []
    client.subscribe(events.append, ConnectionChanged)
    client.start()
    await until(lambda: len(server.log) == 1)
    await client.stop()
    assert attempts[1] - attempts[0] >= 0.3  # not the 0.02 s backoff
    offline = next(e for e in events if isinstance(e, ConnectionChanged) and e.state == "offline")
    assert offline.retry_in is not None
    assert 0.3 <= offline.retry_in <= 0.33
    await client.aclose()


def http_must_not_be_used(request: PushRequest | PullRequest) -> PushResponse | PullResponse:
    raise AssertionError("a live transport is connected: plain HTTP must not be used")


class FakeLive:
    """A live transport stand-in: announces changes when told to."""

    name = "fake-live"

    def __init__(self, server: MemoryServer) -> None:
        self.inner = MockTransport(server)
        self.announce = asyncio.Event()
        self.closed = False

    async def push(self, request: PushRequest) -> PushResponse:
        return await self.inner.push(request)

    async def pull(self, request: PullRequest) -> PullResponse:
        return await self.inner.pull(request)

    async def wait_for_changes(self, max_wait: float) -> bool:
        try:
            await asyncio.wait_for(self.announce.wait(), max_wait)
        except TimeoutError:
            return False
        self.announce.clear()
        return True

    async def aclose(self) -> None:
        self.closed = True


async def test_start_prefers_a_live_transport_and_pulls_when_it_announces(tmp_path: Path) -> None:
    server = MemoryServer()
    live = FakeLive(server)
    calls: list[LiveParams] = []

    async def connect(params: LiveParams) -> FakeLive:
        calls.append(params)
        return live

    client = SyncClient(
        "http://sync.example",
        "tok",
        "phone-a",
        tmp_path / "a.db",
        transport=MockTransport(http_must_not_be_used),
        live_transports=[connect],
        sync_interval=60,
    )
    events: list[Event] = []
    client.subscribe(events.append, ConnectionChanged)
    client.start()
    await until(lambda: "online" in states(events))
    assert calls == [LiveParams("http://sync.example", "tok", "phone-a", None)]
    assert events[1] == ConnectionChanged("online", "fake-live")

    other = SyncClient(None, None, "web-1", tmp_path / "w.db", transport=MockTransport(server))
    other.collection("deliveries").set("dlv-1", status="pending")
    await other.sync()
    live.announce.set()
    await until(lambda: client.collection("deliveries").get("dlv-1") == {"status": "pending"})
    await client.stop()
    assert live.closed
    await client.aclose()
    await other.aclose()


@pytest.mark.parametrize(
    "failure",
    [ServerError(404, errors.NOT_FOUND, "no WebSocket here yet"), OSError("connection refused")],
    ids=["refused-by-server", "socket-error"],
)
async def test_start_falls_back_to_http_when_the_live_channel_is_unavailable(
    tmp_path: Path, failure: Exception
) -> None:
    server = MemoryServer()

    async def connect(params: LiveParams) -> FakeLive:
        raise failure

    client = SyncClient(
        "http://sync.example",
        "tok",
        "phone-a",
        tmp_path / "a.db",
        transport=MockTransport(server),
        live_transports=[connect],
        sync_interval=60,
    )
    events: list[Event] = []
    client.subscribe(events.append, ConnectionChanged)
    client.start()
    await until(lambda: "online" in states(events))
    await client.stop()
    assert events[1] == ConnectionChanged("online", "mock")
    await client.aclose()


def test_backoff_grows_with_jitter_and_caps() -> None:
    b = Backoff(base=1, cap=10, rng=lambda: 0.0)
    assert [b.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    b = Backoff(base=1, cap=10, rng=lambda: 1.0)
    assert [b.next() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert Backoff(rng=lambda: 0.5).retry_after(10) == 10.5


async def test_live_channel_is_tried_first_again_when_the_whole_network_was_down(tmp_path: Path) -> None:
    server = MemoryServer()
    network = {"up": False}
    live_attempts: list[bool] = []

    def http(request: PushRequest | PullRequest) -> PushResponse | PullResponse:
        if not network["up"]:
            raise TransportError("no route to host")
        return server(request)

    async def connect(params: LiveParams) -> FakeLive:
        live_attempts.append(network["up"])
        if not network["up"]:
            raise TransportError("no route to host")
        return FakeLive(server)

    client = SyncClient(
        "http://sync.example",
        "tok",
        "phone-a",
        tmp_path / "a.db",
        transport=MockTransport(http),
        live_transports=[connect],
        sync_interval=60,
        backoff=FAST,
    )
    events: list[Event] = []
    client.subscribe(events.append, ConnectionChanged)
    client.start()
    await until(lambda: len(live_attempts) >= 2)  # offline: each retry tries the live channel again
    network["up"] = True
    client.notify_online()
    await until(lambda: "online" in states(events))
    await client.stop()
    assert [e for e in events if e.state == "online"] == [ConnectionChanged("online", "fake-live")]
    await client.aclose()


async def test_on_http_fallback_the_loop_returns_to_the_live_channel_after_live_retry_s() -> None:
    server = MemoryServer()
    refusals = {"left": 1}
    live = FakeLive(server)
    used: list[str] = []

    async def connect() -> FakeLive:
        if refusals["left"]:
            refusals["left"] -= 1
            raise ServerError(503, errors.UNAVAILABLE, "WebSocket endpoint busy")
        return live

    async def sync(transport: object) -> None:
        used.append(getattr(transport, "name", "?"))

    emitted: list[Event] = []
    loop = BackgroundSync(
        sync, MockTransport(server), emitted.append, live=[connect], interval=0.05, backoff=FAST, live_retry_s=0.2
    )
    loop.start()
    await until(lambda: "fake-live" in used)
    await loop.stop()
    assert used[0] == "mock"  # refused: HTTP took over, and polled meanwhile
    assert used.count("mock") >= 2
    assert [e.transport for e in emitted if isinstance(e, ConnectionChanged) and e.state == "online"] == [
        "mock",
        "fake-live",
    ]
