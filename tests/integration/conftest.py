"""An in-process server per test, on every store backend (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from syncserver.admin.tenants import create_tenant
from syncserver.app import create_app
from syncserver.auth.tokens import Role, TokenVerifier
from syncserver.settings import Settings
from syncstore import MemoryStore
from tests import services

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "memory":
        yield "memory://"
    elif request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}"
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture(
    params=[pytest.param("sqlite", id="sqlite"), pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)]
)
def migration_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, not migrated: a new SQLite file, or a private PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}"
    else:
        with services.private_database("migration") as url:
            yield url


def make_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    return replace(
        Settings(
            database_url=database_url,
            data_dir=tmp_path / "data",
            master_key=base64.b64encode(secrets.token_bytes(32)).decode(),
            jwt_secret=secrets.token_urlsafe(32),
            collections_file=ROOT / "config" / "collections.toml",
        ),
        **overrides,
    )


@dataclass
class Server:
    app: Litestar
    client: AsyncTestClient[Litestar]
    settings: Settings
    tenants: list[str] = field(default_factory=list)

    @property
    def verifier(self) -> TokenVerifier:
        v: TokenVerifier = self.app.state.verifier
        return v

    async def tenant(self, prefix: str = "acme") -> str:
        tid = f"{prefix}-{uuid.uuid4().hex[:8]}"
        await create_tenant(self.app.state.store, self.app.state.keyring, tid)
        self.tenants.append(tid)
        return tid

    def headers(
        self, tenant: str, sub: str, role: Role = "dispatcher", channels: tuple[str, ...] = ()
    ) -> dict[str, str]:
        """Bearer headers. Tenant-wide (dispatcher) by default; drivers see only ``channels``."""
        return {"Authorization": f"Bearer {self.verifier.issue(tenant, sub, role, channels)}"}

    async def push(self, headers: dict[str, str], replica: str, changes: list[dict[str, Any]]) -> Any:
        r = await self.client.post("/v1/sync/push", json={"replica": replica, "changes": changes}, headers=headers)
        assert r.status_code == 200, r.text
        return r.json()["results"]

    async def pull_all(self, headers: dict[str, str], cursor: str | None = None, limit: int = 1000) -> Any:
        changes: list[Any] = []
        while True:
            r = await self.client.post("/v1/sync/pull", json={"cursor": cursor, "limit": limit}, headers=headers)
            assert r.status_code == 200, r.text
            body = r.json()
            changes += body.get("changes", [])
            cursor = body["cursor"]
            if not body.get("more"):
                return changes, cursor


async def start(settings: Settings) -> AsyncIterator[Server]:
    store = MemoryStore() if settings.database_url == "memory://" else None
    app = create_app(settings, store=store)
    async with AsyncTestClient(app) as client:
        yield Server(app, client, settings)


@pytest.fixture
async def server(backend_url: str, tmp_path: Path) -> AsyncIterator[Server]:
    async for s in start(make_settings(tmp_path, backend_url)):
        yield s


@pytest.fixture
async def sqlite_server(tmp_path: Path) -> AsyncIterator[Server]:
    async for s in start(make_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}")):
        yield s


def change(
    n: int,
    entity: str,
    ops: list[dict[str, Any]],
    context: dict[str, int] | None = None,
    collection: str = "deliveries",
    hlc: tuple[int, int] = (1_700_000_000_000, 0),
) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "n": n,
        "collection": collection,
        "entity": entity,
        "hlc": list(hlc),
        "context": context or {},
        "ops": ops,
    }


__all__ = ["Server", "change", "make_settings", "services", "start"]
