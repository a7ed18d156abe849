"""The push budget over HTTP and WebSocket: a storm of pushes is decoded a few at a time, and every one applies.

``SYNC_PUSH_INFLIGHT_BYTES`` bounds the push bodies a process holds decoded at
once (``syncserver/sync/push_budget.py``). These tests send many pushes at
once with a budget that fits two of them, and check that no more than that
were in the push service together, that later ones waited, and that every
change applied exactly once, as without the bound.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar
from websockets.asyncio.client import connect

from syncserver.admin.tenants import create_tenant
from syncserver.app import create_app
from syncserver.settings import Limits, LiveSettings
from syncserver.sync.push import PushService
from syncserver.transport.ws import UNCOUNTED_FRAME_BYTES
from syncstore import MemoryStore
from tests.integration.conftest import make_settings
from tests.integration.in_loop import uvicorn_in_loop

PUSHES = 12
CHANGES_PER_PUSH = 8


def body(replica: str) -> bytes:
    changes = [
        {
            "id": str(uuid.uuid4()),
            "n": n,
            "collection": "deliveries",
            "entity": f"{replica}-{n}",
            "hlc": [1_700_000_000_000, n],
            "context": {},
            "ops": [
                {"op": "set", "field": "status", "value": "pending"},
                {"op": "set", "field": "address", "value": f"{n} Harbour Road, {replica} " + "x" * 400},
            ],
        }
        for n in range(1, CHANGES_PER_PUSH + 1)
    ]
    return msgspec.json.encode({"replica": replica, "changes": changes})


class Counted:
    """Wraps the app's push service: how many pushes were in it at once, at most."""

    def __init__(self, service: PushService) -> None:
        self.inside = self.most = 0
        self.real = service.push
        service.push = self  # type: ignore[method-assign]

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.inside += 1
        self.most = max(self.most, self.inside)
        try:
            await asyncio.sleep(0.02)  # a slower commit: pushes overlap for sure when nothing holds them back
            return await self.real(*args, **kwargs)
        finally:
            self.inside -= 1


@asynccontextmanager
async def serving(tmp_path: Path, backend: str, limit: int) -> AsyncIterator[tuple[str, Litestar, Counted]]:
    """The real app on uvicorn in this event loop, with a push budget of ``limit`` bytes."""
    url = "memory://" if backend == "memory" else f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}"
    settings = make_settings(
        tmp_path,
        url,
        limits=replace(Limits(), push_inflight_bytes=limit),
        live=LiveSettings(max_connections_per_user=1000),
    )
    app = create_app(settings, store=MemoryStore() if backend == "memory" else None)
    async with uvicorn_in_loop(app) as port:
        yield f"http://127.0.0.1:{port}", app, Counted(app.state.push_service)


def room_for_two(frames: list[bytes]) -> int:
    return 2 * max(len(f) for f in frames) + min(len(f) for f in frames) // 2


@pytest.mark.parametrize(("backend", "bounded"), [("memory", True), ("sqlite", True), ("memory", False)])
async def test_a_storm_of_http_pushes_is_decoded_two_at_a_time_and_every_change_applies(
    tmp_path: Path, backend: str, bounded: bool
) -> None:
    bodies = [body(f"phone-{i:02d}") for i in range(PUSHES)]
    async with serving(tmp_path, backend, room_for_two(bodies) if bounded else 0) as (base, app, counted):
        tenant = f"acme-{uuid.uuid4().hex[:8]}"
        await create_tenant(app.state.store, app.state.keyring, tenant)
        token = app.state.verifier.issue(tenant, "dispatcher-1", "dispatcher")
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            answers = await asyncio.gather(*(http.post("/v1/sync/push", content=b, headers=headers) for b in bodies))
            cursor: str | None = None
            pulled = 0
            while True:
                page = (await http.post("/v1/sync/pull", json={"cursor": cursor}, headers=headers)).json()
                pulled += len(page["changes"])
                cursor = page["cursor"]
                if not page["more"]:
                    break
        budget = app.state.push_service.budget
    assert [a.status_code for a in answers] == [200] * PUSHES
    assert [r["status"] for a in answers for r in a.json()["results"]] == ["applied"] * PUSHES * CHANGES_PER_PUSH
    assert pulled == PUSHES * CHANGES_PER_PUSH
    if bounded:
        assert counted.most <= 2, f"{counted.most} pushes were decoded and in the service at once; room for two"
        assert budget.used == 0
    else:
        assert counted.most > 2, "without the bound every push is in the service at once (what the bound prevents)"


class Start:
    """Releases every session's push at once, when all of them have said hello and caught up."""

    def __init__(self, sessions: int) -> None:
        self.waiting = sessions
        self.go = asyncio.Event()

    async def ready(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.go.set()
        await self.go.wait()


async def ws_push(url: str, token: str, frame: bytes, start: Start) -> list[dict[str, Any]]:
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}, compression=None) as ws:
        await ws.send(msgspec.json.encode({"type": "hello", "versions": [1]}).decode())
        while msgspec.json.decode(await ws.recv())["type"] != "synced":
            pass
        await start.ready()
        await ws.send(frame.decode())
        while True:
            message = msgspec.json.decode(await ws.recv())
            assert message["type"] != "error", message
            if message["type"] == "push_result":
                results: list[dict[str, Any]] = message["results"]
                return results


@pytest.mark.parametrize("bounded", [True, False])
async def test_websocket_push_frames_wait_for_room_before_they_are_decoded(tmp_path: Path, bounded: bool) -> None:
    frames = []
    for i in range(PUSHES):
        push = msgspec.json.decode(body(f"ws-phone-{i:02d}"))
        frames.append(msgspec.json.encode({"type": "push", "id": f"p-{i}", **push}))
    assert min(len(f) for f in frames) >= UNCOUNTED_FRAME_BYTES, "frames this small would skip the budget"
    async with serving(tmp_path, "memory", room_for_two(frames) if bounded else 0) as (base, app, counted):
        tenant = f"acme-{uuid.uuid4().hex[:8]}"
        await create_tenant(app.state.store, app.state.keyring, tenant)
        token = app.state.verifier.issue(tenant, "dispatcher-1", "dispatcher")
        url = base.replace("http://", "ws://") + "/v1/sync/ws"
        start = Start(len(frames))
        results = await asyncio.gather(*(ws_push(url, token, frame, start) for frame in frames))
    assert [r["status"] for rs in results for r in rs] == ["applied"] * PUSHES * CHANGES_PER_PUSH
    if bounded:
        assert counted.most <= 2, f"{counted.most} WebSocket pushes were decoded and in the service at once"
    else:
        assert counted.most > 2, "without the bound every frame's push is in the service at once"


async def test_a_client_sending_its_body_slowly_holds_no_room_from_the_others(tmp_path: Path) -> None:
    bodies = [body(f"phone-{i:02d}") for i in range(4)]
    async with serving(tmp_path, "memory", room_for_two(bodies)) as (base, app, _):
        tenant = f"acme-{uuid.uuid4().hex[:8]}"
        await create_tenant(app.state.store, app.state.keyring, tenant)
        token = app.state.verifier.issue(tenant, "dispatcher-1", "dispatcher")
        host, port = base.removeprefix("http://").split(":")
        # A push that declares a body larger than the whole budget and sends a few bytes of it.
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/sync/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {token}\r\nContent-Length: 1000000\r\n\r\n".encode()
            + b'{"replica": "slow", "changes": ['
        )
        await writer.drain()
        try:
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            async with httpx.AsyncClient(base_url=base, timeout=30) as http, asyncio.timeout(10):
                answers = await asyncio.gather(
                    *(http.post("/v1/sync/push", content=b, headers=headers) for b in bodies)
                )
            assert [a.status_code for a in answers] == [200] * len(bodies), "the others waited on the slow sender"
            assert app.state.push_service.budget.used == 0
        finally:
            writer.close()
