"""Input limits with stable codes, and rate limiting per token (in memory and, across processes, in Redis)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from syncserver.settings import Limits
from tests import services
from tests.integration.conftest import Server, change, make_settings, start


def set_(field: str, value: Any) -> dict[str, Any]:
    return {"op": "set", "field": field, "value": value}


@pytest.fixture
async def tight(backend_url: str, tmp_path: Path) -> AsyncIterator[Server]:
    limits = Limits(
        max_body_bytes=32 * 1024,
        max_changes_per_push=10,
        max_ops_per_change=4,
        max_value_bytes=256,
        max_fields_per_entity=3,
        max_id_length=16,
        max_field_name_length=8,
    )
    async for s in start(make_settings(tmp_path, backend_url, limits=limits)):
        yield s


async def test_every_per_change_limit_rejects_only_that_change_with_its_code(tight: Server) -> None:
    server = tight
    tenant = await server.tenant()
    h = server.headers(tenant, "boss")
    results = await server.push(
        h,
        "phone-1",
        [
            change(1, "dlv-1", [set_("a", 1), set_("b", 2), set_("c", 3)]),
            change(2, "dlv-1", [set_("d", 4)]),  # a fourth field
            change(3, "dlv-" + "x" * 13, [set_("a", 1)]),  # 17 characters
            change(4, "dlv-1", [set_("toolong12", 1)]),  # 9 characters
            change(5, "dlv-1", [{"op": "remove", "field": "tags", "value": "v" * 300}]),
            change(6, "dlv-1", [set_("a", "v" * 300)]),
            change(7, "dlv-1", [set_("a", i) for i in range(5)]),
            # Each value under the limit, together over it: the limit is per value.
            change(8, "dlv-1", [set_("a", "v" * 200), set_("b", "w" * 200), set_("c", "x" * 200)]),
            change(9, "dlv-1", [set_("a", "fine")]),
        ],
    )
    codes = [r.get("error", {}).get("code", r["status"]) for r in results]
    assert codes == [
        "applied",
        "too_many_fields",
        "id_too_long",
        "field_name_too_long",
        "value_too_large",
        "value_too_large",
        "too_many_ops",
        "applied",
        "applied",
    ]
    dead = await server.app.state.store.dead_letters(tenant, 10)
    assert sorted(d.n for d in dead) == [2, 3, 4, 5, 6, 7]


async def test_request_limits_answer_413_or_422_and_store_nothing(tight: Server) -> None:
    server = tight
    tenant = await server.tenant()
    h = server.headers(tenant, "boss")
    cases = [
        ({"replica": "r" * 17, "changes": []}, 422, "id_too_long"),
        ({"replica": "p", "changes": [change(i, "e", [set_("a", 1)]) for i in range(1, 12)]}, 413, "too_many_changes"),
        ({"replica": "p", "changes": [], "pad": "x" * 40_000}, 413, "body_too_large"),
    ]
    for body, status, code in cases:
        r = await server.client.post("/v1/sync/push", json=body, headers=h)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code)
    r = await server.client.post("/v1/sync/pull", content=b"{" + b" " * 40_000 + b"}", headers=h)
    assert (r.status_code, r.json()["error"]["code"]) == (413, "body_too_large")
    record = await server.app.state.store.get_tenant(tenant)
    assert record.last_seq == 0
    assert await server.app.state.store.dead_letters(tenant, 10) == []


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[Server]:
    async for s in start(make_settings(tmp_path, "memory://", rate_limit="5/minute")):
        yield s


async def test_over_the_rate_limit_a_token_gets_429_with_retry_after(limited: Server) -> None:
    server = limited
    tenant = await server.tenant()
    a, b = server.headers(tenant, "a"), server.headers(tenant, "b")
    for _ in range(5):
        assert (await server.client.post("/v1/sync/pull", json={}, headers=a)).status_code == 200
    r = await server.client.post("/v1/sync/pull", json={}, headers=a)
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert r.headers["ratelimit-limit"] == "5"
    # Per token: another device is not affected; health checks are never limited.
    assert (await server.client.post("/v1/sync/pull", json={}, headers=b)).status_code == 200
    for _ in range(10):
        assert (await server.client.get("/health/live")).status_code == 200
    # Requests with bad tokens are counted too (per token), so guessing is throttled.
    junk = {"Authorization": "Bearer not-a-token"}
    statuses = [(await server.client.post("/v1/sync/pull", json={}, headers=junk)).status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]


async def test_with_redis_the_limit_holds_across_server_processes(tmp_path: Path) -> None:
    url = services.redis_url()
    prefix = services.key_prefix()
    settings = [
        make_settings(tmp_path / str(i), "memory://", rate_limit="6/minute", redis_url=url, redis_prefix=prefix)
        for i in range(2)
    ]
    # One deployment: the same secrets on both "processes".
    settings[1] = replace(settings[1], jwt_secret=settings[0].jwt_secret, master_key=settings[0].master_key)
    async with AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(_serve(s)) for s in settings]
        tenant = await servers[0].tenant()
        await servers[1].app.state.store.create_tenant(
            tenant, (await servers[0].app.state.store.tenant_keys(tenant))[0], 0
        )
        h = servers[0].headers(tenant, f"u-{uuid.uuid4().hex[:6]}")
        statuses = [
            (await servers[i % 2].client.post("/v1/sync/pull", json={}, headers=h)).status_code for i in range(8)
        ]
    assert statuses == [200] * 6 + [429] * 2


@asynccontextmanager
async def _serve(settings: Any) -> AsyncIterator[Server]:
    gen = start(settings)
    server = await gen.__anext__()
    try:
        yield server
    finally:
        await gen.aclose()


async def test_rate_limit_counts_expire(tmp_path: Path) -> None:
    async for server in start(make_settings(tmp_path, "memory://", rate_limit="2/second")):
        tenant = await server.tenant()
        h = server.headers(tenant, "a")
        # Until the limit bites; on a loaded machine a window may pass between the first requests.
        codes: list[int] = []
        while len(codes) < 20 and 429 not in codes:
            codes.append((await server.client.post("/v1/sync/pull", json={}, headers=h)).status_code)
        assert codes[-1] == 429
        assert set(codes[:-1]) == {200}
        assert len(codes) >= 3
        # Refused requests are not counted, so polling waits for the window to pass and no longer.
        deadline = time.monotonic() + 5
        while (status := (await server.client.post("/v1/sync/pull", json={}, headers=h)).status_code) == 429:
            assert time.monotonic() < deadline, "the 2/second count never expired"
            await asyncio.sleep(0.05)
        assert status == 200


async def test_with_redis_down_the_limit_fails_open_to_per_process_counts(tmp_path: Path) -> None:
    from syncserver.testing import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    async for server in start(make_settings(tmp_path, "memory://", rate_limit="4/minute", redis_url=dead)):
        tenant = await server.tenant()
        h = server.headers(tenant, "dispatcher-1")
        codes = []
        for _ in range(6):
            r = await server.client.post("/v1/sync/pull", json={"cursor": None}, headers=h)
            codes.append(r.status_code)
        # Requests are served (not 500) and the limit still holds, counted in this process.
        assert codes == [200, 200, 200, 200, 429, 429]
