"""Tenant lifecycle: creating a tenant creates its first data key."""

from __future__ import annotations

import re
import time

from syncserver.keys.keyring import TenantKeyring
from syncstore.adminstore import AdminStore
from syncstore.records import TenantRecord
from syncstore.store import Store

_TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class InvalidTenantId(ValueError):
    pass


class TenantRecentlyErased(ValueError):
    """The id belonged to a tenant erased less than ``SYNC_KEY_CACHE_TTL_S`` ago."""


async def create_tenant(store: Store, keyring: TenantKeyring, tenant_id: str) -> TenantRecord:
    """Create a tenant and its version-1 data key. Raises ``TenantExists``, ``InvalidTenantId`` and
    ``TenantRecentlyErased``.

    Pitfall: a server that served the id before its erasure (run by another process, the CLI) may still hold
    the erased tenant's keys in its cache for ``SYNC_KEY_CACHE_TTL_S``. A tenant made again under that id within
    that time would get its rows sealed there under a destroyed key, acknowledged and unreadable. So the id can
    be reused only once that time has passed since the erasure (its audit entry survives it).
    """
    if not _TENANT_ID.match(tenant_id):
        raise InvalidTenantId("tenant ids are 1-63 characters of a-z, 0-9, '-' and '_', starting alphanumeric")
    now = int(time.time() * 1000)
    if isinstance(store, AdminStore):
        latest = await store.audit_log(tenant_id, None, 1)
        if latest and latest[0].action == "tenant.erase" and now - latest[0].created_at < keyring.ttl_s * 1000:
            wait_s = -(-(latest[0].created_at + int(keyring.ttl_s * 1000) - now) // 1000)
            raise TenantRecentlyErased(
                f"tenant {tenant_id!r} was erased less than SYNC_KEY_CACHE_TTL_S ({keyring.ttl_s:g} s) ago and "
                f"servers may still hold its destroyed keys; reuse the id in {wait_s} s"
            )
    await store.create_tenant(tenant_id, keyring.new_key(tenant_id, 1), now)
    record = await store.get_tenant(tenant_id)
    assert record is not None
    return record
