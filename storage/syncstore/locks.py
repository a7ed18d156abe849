"""In-process locks, one per tenant.

MemoryStore relies on them for its promise; SqlStore uses them in front of the
database lock so that many pushes to one tenant queue in the event loop instead
of each holding a pooled connection while blocked on the database.
"""

from __future__ import annotations

import asyncio
import weakref


class TenantLocks:
    """An ``asyncio.Lock`` per tenant id, created on first use.

    Entries are weak: a lock vanishes once no task holds or awaits it, so the map
    does not grow with the number of tenants ever seen.
    """

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def __call__(self, tenant_id: str) -> asyncio.Lock:
        lock = self._locks.get(tenant_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[tenant_id] = lock
        return lock
