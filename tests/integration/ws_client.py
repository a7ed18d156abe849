"""Helpers for tests against real server processes: WebSocket subscribers (``websockets``), pushes, readiness."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis
from websockets.asyncio.client import ClientConnection, connect

from syncserver.admin.tenants import create_tenant
from syncserver.auth.tokens import TokenVerifier
from syncserver.keys.keyring import TenantKeyring
from syncserver.keys.providers import LocalKeyProvider
from syncserver.testing import free_port, running_server
from syncstore import open_store
from syncstore.migrate import upgrade
from tests import services

WAIT_S = 20.0


async def new_tenant(env: dict[str, str], migrate: bool = True) -> str:
    """Migrate the servers' database and create a tenant, in-process (the CLI would cost seconds)."""
    url = env["SYNC_DATABASE_URL"]
    if migrate:
        await upgrade(url)
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    store = open_store(url)
    try:
        await create_tenant(store, TenantKeyring(store, LocalKeyProvider.from_b64(env["SYNC_MASTER_KEY"])), tenant)
    finally:
        await store.close()
    return tenant


@contextlib.contextmanager
def servers(env: dict[str, str], tmp: Path, count: int = 2) -> Iterator[list[str]]:
    """``count`` server processes on one configuration, started side by side; yields their base URLs."""
    managers = [running_server(env, free_port(), tmp / f"server-{i}.log") for i in range(count)]
    with contextlib.ExitStack() as stack:
        with ThreadPoolExecutor(count) as pool:
            futures = [pool.submit(m.__enter__) for m in managers]
        for manager, future in zip(managers, futures, strict=True):
            if future.exception() is None:
                stack.push(manager.__exit__)
        yield [future.result() for future in futures]


def issue(env: dict[str, str], tenant: str, sub: str = "dispatcher-1") -> str:
    """A dispatcher token signed with the servers' secret (no CLI round trip)."""
    return TokenVerifier(env["SYNC_JWT_SECRET"], "syncserver", "sync").issue(tenant, sub, "dispatcher")


def changes(replica: str, first_n: int, count: int, value: str = "pending") -> list[dict[str, Any]]:
    """``count`` changes from ``replica`` numbered from ``first_n``, one new entity each (``<replica>-<n>``)."""
    return [
        {
            "id": str(uuid.uuid4()),
            "n": n,
            "collection": "deliveries",
            "entity": f"{replica}-{n}",
            "hlc": [1_700_000_000_000, 0],
            "context": {},
            "ops": [{"op": "set", "field": "status", "value": value}],
        }
        for n in range(first_n, first_n + count)
    ]


async def push(client: httpx.AsyncClient, base: str, replica: str, batch: list[dict[str, Any]]) -> None:
    r = await client.post(f"{base}/v1/sync/push", json={"replica": replica, "changes": batch})
    assert r.status_code == 200, r.text
    assert {x["status"] for x in r.json()["results"]} == {"applied"}, r.text


async def ready(client: httpx.AsyncClient, base: str) -> dict[str, Any]:
    r = await client.get(f"{base}/health/ready")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def until_ready(client: httpx.AsyncClient, base: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while True:
        body = await ready(client, base)
        if body["status"] == status:
            return body
        assert time.monotonic() < deadline, f"{base} never reported {status}: {body}"
        await asyncio.sleep(0.05)


class Subscriber:
    """A live-channel client that records every entity it receives, with its arrival time.

    ``rcvbuf`` shrinks the socket's receive buffer (the kernel then holds little for a
    client that stops reading); ``reading`` can be cleared to stop reading altogether.
    """

    def __init__(self, base: str, token: str, *, rcvbuf: int | None = None) -> None:
        self.url = base.replace("http://", "ws://") + "/v1/sync/ws"
        self.token = token
        self.rcvbuf = rcvbuf
        self.received: list[tuple[int, str]] = []
        self.arrived: dict[str, float] = {}
        self.messages: list[str] = []
        self.synced = 0
        self.reading = asyncio.Event()
        self.reading.set()
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Subscriber:
        sock = None
        if self.rcvbuf is not None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            host, port = self.url.split("//")[1].split("/")[0].split(":")
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        self._ws = await connect(
            self.url,
            additional_headers={"Authorization": f"Bearer {self.token}"},
            compression=None,
            max_queue=1 if self.rcvbuf is not None else 16,
            ping_interval=None,
            sock=sock,
        )
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
            await self.reading.wait()
            message = msgspec.json.decode(await ws.recv())
            self.messages.append(message["type"])
            match message["type"]:
                case "changes":
                    now = time.monotonic()
                    for entity in message["changes"]:
                        self.received.append((entity["seq"], entity["entity"]))
                        self.arrived.setdefault(entity["entity"], now)
                case "synced":
                    self.synced += 1
                case "ping":
                    await ws.send(msgspec.json.encode({"type": "pong"}).decode())
                case "error":
                    raise AssertionError(f"server error: {message}")

    async def until(self, predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self._task is not None and self._task.done():
                self._task.result()  # surfaces why the reader stopped
                raise AssertionError(f"the subscriber stopped reading before {what}")
            assert time.monotonic() < deadline, f"timed out waiting for {what}; have {len(self.received)} entities"
            await asyncio.sleep(0.005)

    async def until_has(self, entities: set[str], timeout: float = WAIT_S) -> None:
        await self.until(lambda: entities <= self.arrived.keys(), f"{len(entities)} entities", timeout)

    def assert_exactly_once_in_order(self, expected: set[str]) -> None:
        seqs = [seq for seq, _ in self.received]
        assert seqs == sorted(seqs), "seqs out of order"
        assert len(set(seqs)) == len(seqs), "a seq was delivered twice"
        names = [entity for _, entity in self.received]
        assert len(names) == len(set(names)), "an entity was delivered twice"
        assert set(names) == expected, f"missing {sorted(expected - set(names))[:5]}, extra {set(names) - expected}"


@contextlib.contextmanager
def own_redis(port: int, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A private ``redis-server`` on ``port``, stopped by PID (skips, or fails under CI, without the binary)."""
    if shutil.which("redis-server") is None:
        if services.IN_CI:
            pytest.fail("redis-server is not installed; under CI=true this is a failure", pytrace=False)
        pytest.skip("redis-server is not installed")
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port, socket_connect_timeout=0.2)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    assert proc.poll() is None, "redis-server exited"
                    assert time.monotonic() < deadline, "redis-server did not start"
                    time.sleep(0.05)
        finally:
            client.close()
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)
