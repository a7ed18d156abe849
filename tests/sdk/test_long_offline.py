"""A long offline day: 10,000 queued changes drain in batches with memory bounded by a batch, not the queue.

The server side is a counting handler that keeps O(1) state, so tracemalloc
measures the client alone. The same drain with 1,000 and with 10,000 queued
changes must peak at about the same memory.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from syncclient import MockTransport, SyncClient, TransportError
from syncproto.messages import Applied, PullRequest, PullResponse, PushRequest, PushResponse, PushResult


class CountingServer:
    """Accepts changes in strict counter order and remembers only the high-water mark."""

    def __init__(self) -> None:
        self.online = False
        self.hwm = 0
        self.pushes = 0
        self.largest_push = 0

    def __call__(self, request: PushRequest | PullRequest) -> PushResponse | PullResponse:
        if not self.online:
            raise TransportError("no signal")
        if isinstance(request, PullRequest):
            return PullResponse(cursor="end")
        self.pushes += 1
        self.largest_push = max(self.largest_push, len(request.changes))
        results: list[PushResult] = []
        for change in request.changes:
            assert change.n == self.hwm + 1, "changes must arrive once, in counter order"
            self.hwm = change.n
            results.append(Applied(change.id, change.n, change.n))
        return PushResponse(results)


async def offline_day(tmp: Path, count: int) -> tuple[int, CountingServer]:
    """Queue ``count`` changes offline, reconnect, drain; return the drain's peak traced memory."""
    server = CountingServer()
    client = SyncClient(None, None, "phone-a", tmp / f"day-{count}.db", transport=MockTransport(server))
    d = client.collection("deliveries")
    with client.batch():  # one commit for the whole day keeps the test fast; durability is tested elsewhere
        for i in range(count):
            entity = f"dlv-{i % 200}"
            if i % 2:
                d.set(entity, status="out_for_delivery", note="x" * 100, step=i)
            else:
                d.append(entity, "trail", {"lat": 25.2, "lon": 55.27, "t": i})
    with pytest.raises(TransportError):
        await client.sync()  # still in the tunnel
    assert client.pending_count() == count

    server.online = True
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        await client.sync()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert client.pending_count() == 0
    assert client.store.outbox_size() == 0
    await client.aclose()
    return peak, server


@pytest.mark.slow
async def test_ten_thousand_queued_changes_drain_in_batches_with_bounded_memory(tmp_path: Path) -> None:
    small_peak, _ = await offline_day(tmp_path, 1_000)
    peak, server = await offline_day(tmp_path, 10_000)

    assert server.hwm == 10_000
    assert server.largest_push == 500
    assert server.pushes == 20
    # Ten times the queue, about the same peak: memory follows the batch, not the backlog.
    assert peak < small_peak * 1.5 + 256 * 1024, (small_peak, peak)
    assert peak < 4 * 1024 * 1024, peak
