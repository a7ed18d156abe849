"""Servers for SDK tests: in-process (MemoryStore over httpx's ASGITransport) and real processes.

The in-process server runs in the test's event loop, so SDK clients reach it
through ``HttpTransport(client=...)`` with no socket. ``ServerProcess`` runs
uvicorn on an SQLite file and can be SIGKILLed and restarted on the same port.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar

from syncclient import HttpTransport, SyncClient, load_schema
from syncproto.messages import ConflictView, EntityView, PullRequest
from syncserver.admin.tenants import create_tenant
from syncserver.app import create_app
from syncserver.auth.tokens import Role, TokenVerifier
from syncserver.settings import Settings
from syncserver.testing import ROOT, cli, free_port, server_env, stop, wait_ready
from syncstore import ChangeRecord, MemoryStore, open_store

COLLECTIONS = ROOT / "config" / "collections.toml"
SCHEMA = load_schema(COLLECTIONS)
BASE = "http://testserver"


# --- in-process -------------------------------------------------------------------


@dataclass
class InProcServer:
    app: Litestar
    http: httpx.AsyncClient
    tenant: str
    tmp: Path

    @property
    def verifier(self) -> TokenVerifier:
        v: TokenVerifier = self.app.state.verifier
        return v

    def token(self, sub: str, role: Role = "dispatcher") -> str:
        """A token; a driver's sees its own channel ``driver:<sub>`` (entities with ``driver_id = sub``)."""
        channels = (f"driver:{sub}",) if role == "driver" else ()
        return self.verifier.issue(self.tenant, sub, role, channels)

    def transport(self, sub: str = "admin-1", role: Role = "admin") -> HttpTransport:
        return HttpTransport(BASE, self.token(sub, role), client=self.http)

    def client(self, replica: str, sub: str | None = None, role: Role = "dispatcher", **kwargs: Any) -> SyncClient:
        """A client of ``sub`` (tenant-wide by default, so tests need not care about channels)."""
        token = self.token(sub or f"user-{replica}", role)
        transport = HttpTransport(BASE, token, client=self.http)
        return SyncClient(
            BASE, token, replica, self.tmp / f"{replica}.db", transport=transport, schema=SCHEMA, **kwargs
        )

    async def conflicts(self, **filters: str) -> list[ConflictView]:
        return await all_conflicts(self.transport(), **filters)

    async def views(self) -> dict[tuple[str, str], EntityView]:
        return await pull_everything(self.transport())


@asynccontextmanager
async def inproc_server(tmp: Path, settings: Settings | None = None) -> AsyncIterator[InProcServer]:
    settings = settings or Settings(
        database_url="memory://",
        data_dir=tmp / "data",
        master_key=base64.b64encode(secrets.token_bytes(32)).decode(),
        jwt_secret=secrets.token_urlsafe(32),
        collections_file=COLLECTIONS,
    )
    app = create_app(settings, store=MemoryStore())
    # The lifespan holds anyio cancel scopes, which must be left by the task that entered them;
    # pytest-asyncio sets fixtures up and tears them down in different tasks, so a host task owns it.
    started, finished = asyncio.Event(), asyncio.Event()

    async def host() -> None:
        async with app.lifespan():
            started.set()
            await finished.wait()

    task = asyncio.create_task(host())
    await asyncio.wait([task, asyncio.create_task(started.wait())], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # the lifespan failed: raise its error
    try:
        # Litestar types its ASGI callable more narrowly than httpx expects; it is a plain ASGI app.
        asgi = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=asgi, base_url=BASE) as http:
            tenant = f"t-{uuid.uuid4().hex[:8]}"
            await create_tenant(app.state.store, app.state.keyring, tenant)
            yield InProcServer(app, http, tenant, tmp)
    finally:
        finished.set()
        await task


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[InProcServer]:
    async with inproc_server(tmp_path) as s:
        yield s


async def pull_everything(transport: HttpTransport) -> dict[tuple[str, str], EntityView]:
    """The server's full state, as a fresh device would pull it."""
    views: dict[tuple[str, str], EntityView] = {}
    cursor = None
    while True:
        page = await transport.pull(PullRequest(cursor=cursor, limit=1000))
        views.update({(v.collection, v.entity): v for v in page.changes})
        cursor = page.cursor
        if not page.more:
            return views


async def all_conflicts(transport: HttpTransport, **filters: str) -> list[ConflictView]:
    out: list[ConflictView] = []
    after: str | None = None
    while True:
        page = await transport.conflicts(after=after, limit=500, **filters)
        out += page.conflicts
        if page.next is None:
            return out
        after = page.next


# --- real processes ------------------------------------------------------------------


@dataclass
class ServerProcess:
    """``uvicorn syncserver.asgi:app`` on an SQLite file; survives SIGKILL + restart (same port, same secrets)."""

    tmp: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    tenant: str = "acme"
    starts: int = 0

    def __post_init__(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.db_url = f"sqlite+aiosqlite:///{self.tmp / 'server.db'}"
        self.env = server_env(self.tmp, self.db_url, COLLECTIONS)
        self.verifier = TokenVerifier(self.env["SYNC_JWT_SECRET"], "syncserver", "sync")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.starts == 0:
            cli(self.env, "tenant", "create", self.tenant)  # also migrates the database
        log = self.tmp / f"server-{self.starts}.log"
        self.starts += 1
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "uvicorn", "syncserver.asgi:app", "--host", "127.0.0.1"),
                    *("--port", str(self.port), "--loop", "uvloop", "--log-level", "warning"),
                ],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        wait_ready(self.url, self.proc, log)

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flush; whatever was not committed is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def token(self, sub: str, role: Role = "dispatcher") -> str:
        channels = (f"driver:{sub}",) if role == "driver" else ()
        return self.verifier.issue(self.tenant, sub, role, channels)

    async def change_log(self) -> list[ChangeRecord]:
        """The server's change log, read straight from its database."""
        store = open_store(self.db_url)
        try:
            return await store.changes(self.tenant, 0, 1_000_000)
        finally:
            await store.close()


@pytest.fixture(scope="session")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("real-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def assert_exactly_once(log: list[ChangeRecord], replica: str, ids: set[str] | None = None) -> list[ChangeRecord]:
    """Each (replica, n) at most once, n gap-free from 1, each id once, and every id in ``ids`` present."""
    mine = [c for c in log if c.replica_id == replica]
    ns = [c.n for c in mine]
    assert ns == list(range(1, len(ns) + 1)), f"counters of {replica} are not 1..N exactly once"
    change_ids = [c.change_id for c in mine]
    assert len(set(change_ids)) == len(change_ids), "a change was applied twice"
    if ids is not None:
        missing = ids - set(change_ids)
        assert not missing, f"{len(missing)} acknowledged writes are missing on the server"
    return mine
