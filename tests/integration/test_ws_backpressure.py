"""Backpressure: a subscriber that stops reading cannot grow the server's memory, and loses nothing.

The unit tests pin the send queue's rules; the real-process test holds a reader
that never reads while 10,000 changes are written, then reads everything.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import httpx
import msgspec
import pytest

from syncproto.messages import WsError, WsPing, WsPushResult, WsSynced
from syncserver.auth.tokens import Principal
from syncserver.live import Connection, Frame
from syncserver.settings import LiveSettings
from syncserver.sync import cursor
from syncserver.testing import free_port, running_server, server_env
from tests.integration.ws_client import Subscriber, changes, issue, new_tenant, push

LIMITS = LiveSettings(queue_frames=4, queue_bytes=1000)
DRIVER = Principal("acme", "driver-1", "dispatcher")


def frames(conn: Connection) -> list[Frame]:
    return list(conn._queue)


def test_a_full_queue_drops_its_change_frames_and_rewinds_to_what_the_socket_took() -> None:
    conn = Connection(DRIVER, LIMITS, position=10)
    overflowed = []
    conn.on_overflow = lambda: overflowed.append(conn.position)
    assert conn.offer(Frame("a" * 100, 11))
    conn.control(WsPushResult("p-1", []))
    assert conn.offer(Frame("b" * 100, 12))
    assert conn.offer(Frame("c" * 100, 13))
    assert conn.position == 13
    assert len(conn) == 4

    assert not conn.offer(Frame("d" * 100, 14)), "a fifth frame passed a bound of four"
    assert overflowed == [10], "nothing was taken by the socket, so the connection resumes from 10"
    assert [f.seq for f in frames(conn)] == [None], "the push result must survive an overflow"
    assert conn.lagging
    assert not conn.live
    assert conn.max_queue_len == 4


def test_the_resume_point_is_the_last_frame_the_socket_took() -> None:
    conn = Connection(DRIVER, LIMITS, position=10)
    conn.on_overflow = lambda: None
    for seq in (11, 12):
        assert conn.offer(Frame("x" * 100, seq))
    taken = conn.pop()  # in flight: it will reach the socket
    assert taken is not None
    assert taken.seq == 11
    assert not conn.offer(Frame("y" * 901, 13)), "1,000 bytes is the bound"
    assert conn.position == 11
    assert len(conn) == 0


def test_an_overflow_drops_a_synced_queued_behind_a_dropped_change_frame() -> None:
    """A ``synced``'s cursor claims every change frame queued before it: dropped with them (PROTOCOL.md §9.3)."""
    conn = Connection(DRIVER, LIMITS, position=10)
    overflowed = []
    conn.on_overflow = lambda: overflowed.append(conn.position)
    conn.control(WsSynced(cursor.encode("acme", 10)))  # before any change frame: it claims nothing dropped
    assert conn.offer(Frame("a" * 100, 11))
    conn.control(WsSynced(cursor.encode("acme", 11)))
    conn.control(WsPushResult("p-1", []))
    conn.control(WsPushResult("p-2", []))  # a fifth frame: overflow
    assert overflowed == [10]
    kinds = [msgspec.json.decode(f.data)["type"] for f in frames(conn)]
    assert kinds == ["synced", "push_result", "push_result"]
    assert msgspec.json.decode(frames(conn)[0].data)["cursor"] == cursor.encode("acme", 10)


def test_a_close_drops_a_synced_queued_behind_a_dropped_change_frame_but_sends_the_error() -> None:
    conn = Connection(DRIVER, LIMITS, position=10)
    assert conn.offer(Frame("a" * 100, 11))
    conn.control(WsSynced(cursor.encode("acme", 11)))
    conn.control(WsError("token_expired", "the token has expired"))
    conn.request_close(4401, "token_expired")
    sent = []
    while (frame := conn.pop()) is not None:
        conn.sent()
        sent.append(msgspec.json.decode(frame.data)["type"])
    assert sent == ["error"]


def test_heartbeats_are_dropped_when_full_but_results_and_errors_are_not() -> None:
    conn = Connection(DRIVER, LIMITS)
    conn.on_overflow = lambda: None
    for i in range(4):
        conn.control(WsError("internal", f"e{i}"))
    conn.control(WsPing(), droppable=True)
    assert len(conn) == 4
    conn.control(WsPushResult("p-9", []))
    assert len(conn) == 5, "a result is never dropped (the reader waits for room before the next message)"


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"{name} not in /metrics"
    return float(found.group(1))


@pytest.mark.slow
async def test_a_reader_that_never_reads_keeps_memory_bounded_and_then_gets_everything(tmp_path: Path) -> None:
    queue_frames = 8
    env = server_env(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}",
        SYNC_WS_QUEUE_FRAMES=str(queue_frames),
        SYNC_WS_QUEUE_BYTES=str(256 * 1024),
        SYNC_WS_PAGE_LIMIT="100",
        SYNC_WS_CACHE_ROWS="200",
        SYNC_RATE_LIMIT="off",
    )
    tenant = await new_tenant(env)
    token = issue(env, tenant)
    value = os.urandom(1024).hex()  # 2 KiB per change: 20 MB of change frames in all (an unbounded queue: +40 MiB)
    with running_server(env, free_port(), tmp_path / "server.log") as base:
        async with (
            httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http,
            Subscriber(base, token, rcvbuf=16 * 1024) as slow,
        ):
            await slow.until(lambda: slow.synced == 1, "the initial catch-up")
            slow.reading.clear()
            before = metric((await http.get(base + "/metrics")).text, "process_resident_memory_bytes")

            written: set[str] = set()
            for i in range(20):
                batch = changes("loader", i * 500 + 1, 500, value)
                await push(http, base, "loader", batch)
                written |= {c["entity"] for c in batch}
            # Once the queue has overflowed the connection lags: later pages are not queued until it drains.
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                stats = (await http.get(base + "/metrics")).text
                if metric(stats, "sync_websocket_overflows_total") >= 1 or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.05)
            grown = metric(stats, "process_resident_memory_bytes") - before

            assert metric(stats, "sync_websocket_overflows_total") >= 1, "the queue never filled: test too weak"
            assert metric(stats, "sync_websocket_queue_frames_high_water") <= queue_frames
            assert grown < 24 * 2**20, f"RSS grew {grown / 2**20:.1f} MiB while the reader slept"
            assert len(slow.received) < 1000, "the reader was not stalled"

            slow.reading.set()
            await slow.until_has(written, timeout=60)
            # A marker after everything: the stream is in seq order, so anything sent twice arrives before it.
            marker = changes("marker", 1, 1)
            await push(http, base, "marker", marker)
            written |= {c["entity"] for c in marker}
            await slow.until_has(written)
            slow.assert_exactly_once_in_order(written)
            assert [seq for seq, _ in slow.received] == list(range(1, 10_002))
            assert slow.synced >= 2, "the lagging connection should have caught up and gone live again"
