"""The server's services in this process, over a fresh tenant: for benchmarks that time one layer directly.

    async with tenant_services(url, data_dir) as (services, who):
        await services.push.push(who, PushRequest(...))

Fresh random secrets each time (generated, never stored); ``who`` is a
dispatcher of the new tenant.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from syncserver.admin.tenants import create_tenant
from syncserver.auth.tokens import Principal
from syncserver.services import Services, open_services
from syncserver.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@asynccontextmanager
async def tenant_services(url: str, data_dir: Path) -> AsyncIterator[tuple[Services, Principal]]:
    settings = Settings(
        database_url=url,
        data_dir=data_dir,
        master_key=base64.b64encode(secrets.token_bytes(32)).decode(),
        jwt_secret=secrets.token_urlsafe(32),
        collections_file=ROOT / "config" / "collections.toml",
    )
    async with open_services(settings) as services:
        tenant = f"bench-{uuid.uuid4().hex[:8]}"
        await create_tenant(services.store, services.keyring, tenant)
        yield services, Principal(tenant, "loader", "dispatcher")
