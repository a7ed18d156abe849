"""Two real server processes (uvicorn + uvloop) share one PostgreSQL database and one Redis.

A change pushed through either process reaches WebSocket subscribers on both,
fast, exactly once and in seq order; with Redis gone each process still serves
its own subscribers, and when Redis returns the others catch up.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from syncserver.testing import free_port, server_env
from tests import services
from tests.integration.ws_client import (
    Subscriber,
    changes,
    issue,
    new_tenant,
    own_redis,
    push,
    ready,
    servers,
    until_ready,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


async def prepare(tmp_path: Path, pg_url: str, redis_url: str, **extra: str) -> tuple[dict[str, str], str]:
    env = server_env(tmp_path, pg_url)
    env.update(SYNC_REDIS_URL=redis_url, SYNC_REDIS_PREFIX=services.key_prefix(), SYNC_MIGRATE_ON_START="0", **extra)
    return env, await new_tenant(env)


async def marker_reaches(http: httpx.AsyncClient, base: str, subscribers: tuple[Subscriber, ...]) -> set[str]:
    """Push one more change through ``base`` and wait until every subscriber has it; return its entity.

    Each stream is in seq order, so a change delivered twice before the marker has
    arrived by the time the marker has: no fixed wait for duplicates to show up.
    """
    marker = changes("marker", 1, 1)
    await push(http, base, "marker", marker)
    entities = {c["entity"] for c in marker}
    for sub in subscribers:
        await sub.until_has(entities)
    return entities


async def test_changes_cross_processes_within_a_second_exactly_once_in_order(pg_url: str, tmp_path: Path) -> None:
    env, tenant = await prepare(tmp_path, pg_url, services.redis_url())
    token = issue(env, tenant)
    auth = {"Authorization": f"Bearer {token}"}
    with servers(env, tmp_path) as (a, b):
        async with (
            httpx.AsyncClient(headers=auth, timeout=30) as http,
            Subscriber(b, token) as on_b,
            Subscriber(b, token) as on_b2,
            Subscriber(a, token) as on_a,
        ):
            for base in (a, b):
                assert (await until_ready(http, base, "ok"))["checks"]["redis"] == "ok"

            # Latency: one change at a time through A, timed until a subscriber on B has it.
            latencies = []
            for n in range(1, 21):
                batch = changes("lat", n, 1)
                began = time.monotonic()
                await push(http, a, "lat", batch)
                await on_b.until_has({batch[0]["entity"]}, timeout=5)
                latencies.append(on_b.arrived[batch[0]["entity"]] - began)
            assert max(latencies) < 1.0, f"push on A -> subscriber on B took {max(latencies):.3f} s"

            # Throughput: four writers through both processes at once.
            async def writer(base: str, replica: str) -> set[str]:
                written: set[str] = set()
                for i in range(6):
                    batch = changes(replica, i * 10 + 1, 10)
                    await push(http, base, replica, batch)
                    written |= {c["entity"] for c in batch}
                return written

            written = await asyncio.gather(*(writer(a if i % 2 else b, f"w{i}") for i in range(4)))
            expected = {f"lat-{n}" for n in range(1, 21)}.union(*written)
            for sub in (on_a, on_b, on_b2):
                await sub.until_has(expected)
            expected |= await marker_reaches(http, a, (on_a, on_b, on_b2))
            for sub in (on_a, on_b, on_b2):
                sub.assert_exactly_once_in_order(expected)
            assert [seq for seq, _ in on_b.received] == list(range(1, len(expected) + 1))


async def test_without_redis_each_process_serves_its_own_and_the_rest_catch_up_after(
    pg_url: str, tmp_path: Path
) -> None:
    services.require("PostgreSQL", services.PG_HOST, services.PG_PORT)
    port = free_port()
    # The periodic resync is pushed out of the way: recovery must come from the reconnect itself.
    # Rate limiting is off: its counters live in Redis too, and it fails closed without it (not ours
    # to test here; see the report).
    env, tenant = await prepare(
        tmp_path, pg_url, f"redis://127.0.0.1:{port}/0", SYNC_WS_RESYNC_MS="600000", SYNC_RATE_LIMIT="off"
    )
    token = issue(env, tenant)
    auth = {"Authorization": f"Bearer {token}"}
    outage = own_redis(port, tmp_path)
    proc = outage.__enter__()
    try:
        with servers(env, tmp_path) as (a, b):
            async with (
                httpx.AsyncClient(headers=auth, timeout=30) as http,
                Subscriber(a, token) as on_a,
                Subscriber(b, token) as on_b,
            ):
                for base in (a, b):
                    await until_ready(http, base, "ok")
                before = changes("a", 1, 5)
                await push(http, a, "a", before)
                first = {c["entity"] for c in before}
                await on_b.until_has(first)

                proc.terminate()
                proc.wait(timeout=10)
                for base in (a, b):
                    body = await until_ready(http, base, "degraded")
                    assert body["checks"]["redis"].startswith("down: "), body
                    assert body["checks"]["database"] == "ok"

                via_a, via_b = changes("a", 6, 5), changes("b", 1, 5)
                local_a, local_b = {c["entity"] for c in via_a}, {c["entity"] for c in via_b}
                await push(http, a, "a", via_a)  # pushes still succeed, and each process
                await on_a.until_has(first | local_a)  # serves its own subscribers
                await push(http, b, "b", via_b)
                await on_b.until_has(first | local_a | local_b)  # B's read of the log includes A's commits
                await asyncio.sleep(0.5)
                assert not local_b & on_a.arrived.keys(), "nothing told A about B's changes, yet it sent them"

                outage.__exit__(None, None, None)
                outage = own_redis(port, tmp_path)
                proc = outage.__enter__()
                for base in (a, b):
                    assert (await until_ready(http, base, "ok"))["checks"]["redis"] == "ok"
                everything = first | local_a | local_b
                for sub in (on_a, on_b):
                    await sub.until_has(everything)
                everything |= await marker_reaches(http, a, (on_a, on_b))
                for sub in (on_a, on_b):
                    sub.assert_exactly_once_in_order(everything)
                assert (await ready(http, a))["status"] == "ok"
    finally:
        outage.__exit__(None, None, None)
