"""Tenant lifecycle: creating a tenant creates its first data key."""

from __future__ import annotations

import re
import time

from syncserver.keys.keyring import TenantKeyring
from syncstore.records import TenantRecord
from syncstore.store import Store

_TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class InvalidTenantId(ValueError):
    pass


async def create_tenant(store: Store, keyring: TenantKeyring, tenant_id: str) -> TenantRecord:
    """Create a tenant and its version-1 data key. Raises ``TenantExists``."""
    if not _TENANT_ID.match(tenant_id):
        raise InvalidTenantId("tenant ids are 1-63 characters of a-z, 0-9, '-' and '_', starting alphanumeric")
    now = int(time.time() * 1000)
    await store.create_tenant(tenant_id, keyring.new_key(tenant_id, 1), now)
    record = await store.get_tenant(tenant_id)
    assert record is not None
    return record
