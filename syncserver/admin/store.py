"""The store the admin tools work on: the sync contract plus the admin one (conflicts, dead letters, audit)."""

from __future__ import annotations

from typing import Protocol

from syncstore.adminstore import AdminStore
from syncstore.store import Store


class AdminBackend(Store, AdminStore, Protocol):
    """A store with both halves: the sync contract and the admin one."""


def admin_backend(store: Store) -> AdminBackend:
    """``store`` as an ``AdminBackend``; every backend in ``syncstore`` is one."""
    if not isinstance(store, AdminStore):
        raise TypeError(f"{type(store).__name__} does not implement syncstore.adminstore.AdminStore")
    return store
