"""A send queue that overflows while its connection catches up loses nothing, and the connection goes live again.

An overflow drops the queued change frames and rewinds the connection to the last frame its socket took.
A catch-up already running must not carry on with what it read from the old position (a page it was
still reading, a frame waiting for room), and the catch-up's own ``synced`` must not overflow the queue:
its cursor would claim the change frames dropped before it, and a client stores that cursor.

The real app runs on uvicorn in the test's event loop, behind a gate on its WebSocket sends of change
frames: while the gate is closed the server's writer waits in ``send`` as for a peer that does not read,
so the queue fills with small limits and a few kilobytes of changes. Every frame of five entities is over
``queue_bytes``: any control frame queued behind one overflows the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar
from websockets.asyncio.client import ClientConnection, connect

from syncproto.messages import PullRequest, PullResponse
from syncserver.admin.tenants import create_tenant
from syncserver.app import create_app
from syncserver.auth.tokens import Principal
from syncserver.live import Connection, LiveHub
from syncserver.settings import LiveSettings
from syncserver.sync import cursor
from syncstore import MemoryStore
from tests.integration.conftest import make_settings
from tests.integration.in_loop import uvicorn_in_loop
from tests.integration.ws_client import changes

LIMITS = LiveSettings(queue_bytes=2000, page_limit=5)
COUNT = 30
VALUE = "x" * 500  # five entities a frame: about 3 KB, over ``queue_bytes``
WAIT_S = 5.0

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Gated:
    """The app behind a gate on its WebSocket change frames (``open``): closed, the server's writer waits."""

    def __init__(self, app: Litestar) -> None:
        self.app = app
        self.open = asyncio.Event()
        self.open.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)  # type: ignore[arg-type]
            return

        async def gated(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.send" and message.get("text", "").startswith('{"type":"changes"'):
                await self.open.wait()
            await send(message)

        await self.app(scope, receive, gated)  # type: ignore[arg-type]


@dataclass
class Served:
    app: Litestar
    gate: Gated
    base: str
    tenant: str
    token: str

    @property
    def hub(self) -> LiveHub:
        hub: LiveHub = self.app.state.live
        return hub

    def connection(self) -> Connection:
        feed = self.hub.feeds[self.tenant]
        (conn,) = feed.connections
        return conn

    async def push(self, batch: list[dict[str, Any]]) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(headers=headers, timeout=WAIT_S) as http:
            r = await http.post(f"{self.base}/v1/sync/push", json={"replica": "loader", "changes": batch})
        assert r.status_code == 200, r.text
        assert {x["status"] for x in r.json()["results"]} == {"applied"}, r.text


@asynccontextmanager
async def serve(tmp_path: Path, live: LiveSettings) -> AsyncIterator[Served]:
    app = create_app(make_settings(tmp_path, "memory://", live=live), store=MemoryStore())
    gate = Gated(app)
    async with uvicorn_in_loop(gate) as port:
        try:
            tenant = f"acme-{uuid.uuid4().hex[:8]}"
            await create_tenant(app.state.store, app.state.keyring, tenant)
            token = app.state.verifier.issue(tenant, "dispatcher-1", "dispatcher")
            yield Served(app, gate, f"http://127.0.0.1:{port}", tenant, token)
        finally:
            gate.open.set()  # the server stops only once nothing it sends is held


class Client:
    """A subscriber recording each entity (seq, name) and, for each ``synced``, its cursor's seq and the
    highest seq received before it."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.received: list[tuple[int, str]] = []
        self.synced: list[tuple[int, int]] = []
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Client:
        url = self.served.base.replace("http://", "ws://") + "/v1/sync/ws"
        headers = {"Authorization": f"Bearer {self.served.token}"}
        self._ws = await connect(url, additional_headers=headers, ping_interval=None, compression=None)
        await self._ws.send(msgspec.json.encode({"type": "hello", "versions": [1]}).decode())
        welcome = msgspec.json.decode(await self._ws.recv())
        assert welcome["type"] == "welcome", welcome
        self._task = asyncio.create_task(self._read(self._ws))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._ws is not None:
            await self._ws.close()

    async def _read(self, ws: ClientConnection) -> None:
        while True:
            message = msgspec.json.decode(await ws.recv())
            match message["type"]:
                case "changes":
                    self.received += [(entity["seq"], entity["entity"]) for entity in message["changes"]]
                case "synced":
                    seq = cursor.decode(self.served.tenant, message["cursor"])
                    self.synced.append((seq, max((s for s, _ in self.received), default=0)))
                case "ping":
                    await ws.send(msgspec.json.encode({"type": "pong"}).decode())
                case "error":
                    raise AssertionError(f"server error: {message}")

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not predicate():
            if self._task is not None and self._task.done():
                self._task.result()
                raise AssertionError(f"the client stopped reading before {what}")
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.received}, {self.synced}"
            await asyncio.sleep(0.005)


def expected(count: int) -> list[tuple[int, str]]:
    return [(n, f"loader-{n}") for n in range(1, count + 1)]


async def assert_caught_up_then_live(served: Served, client: Client, count: int) -> None:
    """Every change once and in order, every ``synced`` at what came before it; then live again."""
    await client.until(lambda: any(seq >= count for seq, _ in client.synced), "the synced after the last change")
    assert client.received == expected(count), "changes lost, repeated or out of order"
    for seq, delivered in client.synced:
        assert seq == delivered, f"a synced cursor at {seq} after only {delivered} was delivered: {client.synced}"
    conn = served.connection()
    await client.until(lambda: conn.live and conn.catchup is None, "the connection to go live")

    await served.push(changes("loader", count + 1, 1))  # live: the feed offers it, no catch-up reads it
    await client.until(lambda: len(client.received) > count, "the change pushed once live")
    assert client.received == expected(count + 1)
    assert conn.live


async def test_an_overflow_while_a_catch_up_page_is_read_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(a) A heartbeat overflows the queue while the catch-up reads its next page: that page was read
    from the old position and must not be queued after the rewind."""
    async with serve(tmp_path, replace(LIMITS, heartbeat_ms=40)) as served:
        await served.push(changes("loader", 1, COUNT, VALUE))
        hub = served.hub
        overflowed = asyncio.Event()
        pull = hub.pull.pull

        async def pull_during_overflow(principal: Principal, request: PullRequest) -> PullResponse:
            if not overflowed.is_set():
                await asyncio.sleep(0.05)  # the writer takes the first frame and waits at the gate
                conn = served.connection()
                if conn.lagging or any(frame.seq is not None for frame in conn._queue):
                    # A change frame waits in a queue over its byte bound: the next heartbeat overflows it.
                    async with asyncio.timeout(WAIT_S):
                        while not conn.lagging:
                            await asyncio.sleep(0.005)
                    overflowed.set()
            return await pull(principal, request)

        monkeypatch.setattr(hub.pull, "pull", pull_during_overflow)
        served.gate.open.clear()
        async with Client(served) as client:
            async with asyncio.timeout(WAIT_S):
                await overflowed.wait()
            served.gate.open.set()
            await assert_caught_up_then_live(served, client, COUNT)


async def test_a_synced_that_would_overflow_waits_and_the_connection_goes_live(tmp_path: Path) -> None:
    """(b) Catch-up reaches the end with change frames queued over the byte bound: its ``synced`` must not
    overflow the queue (dropping those frames, leaving the connection neither live nor catching up, with a
    cursor past what it was sent).

    Two pages: the writer holds the first at the gate, the second is queued, and the catch-up is at the end
    of the log (it queues a frame, or its ``synced``, once at most one change frame waits)."""
    count = 2 * LIMITS.page_limit
    async with serve(tmp_path, LIMITS) as served:
        await served.push(changes("loader", 1, count, VALUE))
        served.gate.open.clear()
        async with Client(served) as client:
            conn = served.connection()
            async with asyncio.timeout(WAIT_S):
                while conn.position < count and not conn.lagging:
                    await asyncio.sleep(0.005)
            await asyncio.sleep(0.1)  # the catch-up is at its end: its synced is queued or waits for room
            assert any(frame.seq is not None for frame in conn._queue) or conn.lagging, "nothing queued: too weak"
            served.gate.open.set()
            await assert_caught_up_then_live(served, client, count)


async def test_a_synced_queued_behind_dropped_change_frames_is_dropped_with_them(tmp_path: Path) -> None:
    """(c) Catch-up queued its ``synced`` behind a change frame the socket has not taken; a live change then
    overflows the queue. The change frame is dropped: the ``synced`` behind it must go too (its cursor claims
    that frame, and a client stores it, PROTOCOL.md §9.3), and the catch-up that resumes sends a new one.

    Two pages: the writer holds the first at the gate; the second and the ``synced`` fill a two-frame queue."""
    live = replace(LIMITS, queue_bytes=1 << 20, queue_frames=2)
    count = 2 * live.page_limit
    async with serve(tmp_path, live) as served:
        await served.push(changes("loader", 1, count))
        served.gate.open.clear()
        async with Client(served) as client:
            conn = served.connection()
            async with asyncio.timeout(WAIT_S):
                while [frame.seq for frame in conn._queue] != [count, None]:
                    await asyncio.sleep(0.005)
            assert conn.live, "the synced is queued: the connection is live"
            await served.push(changes("loader", count + 1, 1))  # offered live to a full queue: it overflows
            assert conn.lagging
            assert not any(frame.claims for frame in conn._queue), "a synced claiming a dropped frame was kept"
            served.gate.open.set()
            await assert_caught_up_then_live(served, client, count + 1)
