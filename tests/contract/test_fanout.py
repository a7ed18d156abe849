"""One contract suite for every fan-out backend (``memory``, ``redis``).

A backend is set up as a *bus*: ``bus.open()`` returns a started fan-out that
stands for one server process. Memory fan-out has no bus beyond one process, so
its bus hands out the same instance; Redis opens a new client on a prefix unique
to the test. Redis tests fail under ``CI=true`` when Redis is down, and skip
otherwise (``tests.services``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from syncserver.fanout import Fanout, MemoryFanout
from syncserver.fanout.redis import RedisFanout
from tests import services

WAIT_S = 5.0
MARKER = ("marker", 9)
"""A notice published last: once a listener hears it, every notice published before it has arrived."""


def before(seen: list[tuple[str, int]], notice: tuple[str, int]) -> list[tuple[str, int]]:
    return seen[: seen.index(notice)]


@dataclass
class Recorder:
    """A ``FanoutListener`` that remembers what it heard."""

    seen: list[tuple[str, int]] = field(default_factory=list)
    resyncs: int = 0

    def changed(self, tenant: str, seq: int) -> None:
        self.seen.append((tenant, seq))

    def resync(self) -> None:
        self.resyncs += 1

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}; heard {self.seen}"
            await asyncio.sleep(0.01)


class Bus:
    def __init__(self, kind: str, url: str | None = None, prefix: str = "") -> None:
        self.kind = kind
        self.url = url
        self.prefix = prefix
        self.opened: list[Fanout] = []

    @property
    def remote(self) -> bool:
        """Whether two ``open()`` calls are two processes' worth of fan-out (not one shared object)."""
        return self.kind != "memory"

    async def open(self, prefix: str | None = None) -> Fanout:
        fanout: Fanout
        if self.kind == "memory":
            if self.opened:
                return self.opened[0]
            fanout = MemoryFanout()
        else:
            assert self.url is not None
            fanout = RedisFanout(self.url, prefix or self.prefix, min_backoff_s=0.02, max_backoff_s=0.2)
        await fanout.start()
        self.opened.append(fanout)
        await until_ready(fanout)
        return fanout

    async def close(self) -> None:
        for fanout in self.opened:
            await fanout.stop()


async def until_ready(fanout: Fanout) -> None:
    deadline = time.monotonic() + WAIT_S
    while any(v != "ok" for v in fanout.checks().values()):
        assert time.monotonic() < deadline, f"fan-out not ready: {fanout.checks()}"
        await asyncio.sleep(0.01)


@pytest.fixture(params=["memory", "redis"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    b = Bus("memory") if request.param == "memory" else Bus("redis", services.redis_url(), services.key_prefix())
    try:
        yield b
    finally:
        await b.close()


async def test_publish_calls_local_listeners_before_it_returns(bus: Bus) -> None:
    fanout = await bus.open()
    heard = Recorder()
    fanout.subscribe(heard)
    await fanout.publish("acme", 7)
    assert heard.seen == [("acme", 7)]


async def test_a_notice_reaches_every_process_once(bus: Bus) -> None:
    a, b = await bus.open(), await bus.open()
    on_a, on_b = Recorder(), Recorder()
    a.subscribe(on_a)
    b.subscribe(on_b)
    await a.publish("acme", 1)
    await a.publish("globex", 4)
    await on_b.until(lambda: len(on_b.seen) >= 2, "the other process to hear both notices")
    # The broker has passed both notices on; a marker published now reaches ``a`` after any echo of
    # them (the broker delivers in publish order), so what ``a`` heard before the marker is final.
    await b.publish("marker", 9)
    await on_a.until(lambda: MARKER in on_a.seen, "the marker")
    assert before(on_a.seen, MARKER) == [("acme", 1), ("globex", 4)], "the publisher heard its own notice twice"
    if bus.remote:
        assert sorted(before(on_b.seen, MARKER)) == [("acme", 1), ("globex", 4)]
    else:
        assert on_a.seen == on_b.seen


async def test_unsubscribed_listeners_hear_nothing(bus: Bus) -> None:
    a, b = await bus.open(), await bus.open()
    kept, dropped = Recorder(), Recorder()
    b.subscribe(kept)
    unsubscribe = b.subscribe(dropped)
    unsubscribe()
    await a.publish("acme", 3)
    await kept.until(lambda: kept.seen == [("acme", 3)], "the remaining listener")
    assert dropped.seen == []


async def test_the_newest_seq_of_a_burst_always_arrives(bus: Bus) -> None:
    """Notices may be coalesced (the highest seq per tenant wins), never lost at the end of a burst."""
    a, b = await bus.open(), await bus.open()
    heard = Recorder()
    b.subscribe(heard)
    for seq in range(1, 201):
        await a.publish("acme", seq)
    await heard.until(lambda: ("acme", 200) in heard.seen, "the last notice of the burst")
    seqs = [s for t, s in heard.seen if t == "acme"]
    assert seqs == sorted(seqs), "notices of one publisher arrived out of order"


async def test_checks_report_the_broker(bus: Bus) -> None:
    fanout = await bus.open()
    assert fanout.checks() == ({"redis": "ok"} if bus.remote else {})


async def test_key_prefixes_isolate_deployments(bus: Bus) -> None:
    if not bus.remote:
        pytest.skip("an in-process bus has no shared broker to isolate")
    prefix = services.key_prefix()
    mine, other, neighbour = await bus.open(), await bus.open(prefix), await bus.open(prefix)
    heard = Recorder()
    other.subscribe(heard)
    await mine.publish("acme", 1)
    await neighbour.publish(*MARKER)  # after mine's notice: a leak of it would arrive first
    await heard.until(lambda: MARKER in heard.seen, "the marker from the same deployment")
    assert heard.seen == [MARKER]


async def test_redis_fanout_serves_local_listeners_while_redis_is_unreachable() -> None:
    """No broker at all (a closed port): start succeeds, local delivery works, readiness says why."""
    from syncserver.testing import free_port

    fanout = RedisFanout(f"redis://127.0.0.1:{free_port()}/0", "sync:", min_backoff_s=0.02, max_backoff_s=0.1)
    await fanout.start()
    try:
        heard = Recorder()
        fanout.subscribe(heard)
        await fanout.publish("acme", 9)
        assert heard.seen == [("acme", 9)]
        await heard.until(lambda: fanout.checks()["redis"].startswith("down: "), "readiness to report redis down")
        assert heard.resyncs == 0
    finally:
        await fanout.stop()


async def test_redis_fanout_resyncs_its_listeners_after_redis_returns(tmp_path: Path) -> None:
    """Notices sent while the subscriber was away are lost, so every resubscription asks for a resync."""
    from syncserver.testing import free_port
    from tests.integration.ws_client import own_redis

    port = free_port()
    with own_redis(port, tmp_path) as first:
        a = RedisFanout(f"redis://127.0.0.1:{port}/0", "sync:", min_backoff_s=0.02, max_backoff_s=0.1)
        b = RedisFanout(f"redis://127.0.0.1:{port}/0", "sync:", min_backoff_s=0.02, max_backoff_s=0.1)
        heard = Recorder()
        b.subscribe(heard)
        await a.start()
        await b.start()
        try:
            await until_ready(a)
            await until_ready(b)
            resyncs = heard.resyncs
            first.terminate()
            first.wait(timeout=10)
            await heard.until(lambda: b.checks()["redis"].startswith("down: "), "redis to be reported down")
            await a.publish("acme", 5)  # may never reach b: a can resend before b resubscribes
            assert heard.resyncs == resyncs
            with own_redis(port, tmp_path):
                await heard.until(lambda: heard.resyncs > resyncs, "a resync after the reconnect")
                await until_ready(b)
        finally:
            await a.stop()
            await b.stop()


class SilentProxy:
    """A TCP proxy to Redis that can go silent: it keeps every connection open but forwards nothing, as a
    connection dropped by a NAT or firewall without a reset looks from the client."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.silent = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        for a, b in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(a, b))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if not self.silent:  # silent: swallowed, the connection stays open
                    writer.write(data)
                    await writer.drain()
        finally:
            writer.close()


async def test_redis_fanout_notices_a_connection_gone_silent_and_resubscribes() -> None:
    """A subscription whose connection forwards nothing (no reset, no close) is found dead by its PING, reported
    down, and replaced once Redis answers again, with a resync (notices sent meanwhile were lost)."""
    url = services.redis_url()
    host, port = url.removeprefix("redis://").split("/")[0].split(":")
    proxy = SilentProxy((host, int(port)))
    await proxy.start()
    fanout = RedisFanout(
        f"redis://127.0.0.1:{proxy.port}/0",
        f"test-{time.time_ns()}:",
        min_backoff_s=0.02,
        max_backoff_s=0.1,
        timeout_s=0.5,
        ping_s=0.5,
    )
    heard = Recorder()
    fanout.subscribe(heard)
    await fanout.start()
    try:
        await until_ready(fanout)
        resyncs = heard.resyncs
        proxy.silent = True
        await heard.until(lambda: fanout.checks()["redis"].startswith("down: "), "the silent connection to be found")
        proxy.silent = False
        await heard.until(lambda: heard.resyncs > resyncs, "a resync after resubscribing")
        await until_ready(fanout)
    finally:
        await fanout.stop()
        await proxy.stop()
