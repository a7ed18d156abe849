"""The public surface of ``syncstore``: exports, backend selection, dependency rule."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import syncstore
from syncstore import FaultyStore, MemoryStore, SqlStore, open_store
from syncstore.faulty import INTERFACES

PACKAGE_DIR = Path(syncstore.__file__).parent
PROJECT_PACKAGES = {"syncproto", "syncstore", "syncserver", "syncclient", "benchmarks", "tests"}
ALLOWED_PROJECT_IMPORTS = {"syncproto", "syncstore"}


EXPORTED = {
    "MEMORY_URL",
    "ChangeRecord",
    "ConflictFilter",
    "ConflictRecord",
    "DeadLetterRecord",
    "DotRecord",
    "EntityKey",
    "EntityRecord",
    "FaultyStore",
    "InjectedFault",
    "MemoryStore",
    "PushBatch",
    "PushLoad",
    "PushSession",
    "ReplicaRecord",
    "SqlStore",
    "Store",
    "StoreUnavailable",
    "TRANSIENT_ERRORS",
    "TenantExists",
    "TenantNotFound",
    "TenantRecord",
    "WrappedKey",
    "open_store",
}
ADMIN_EXPORTS = {"AdminStore", "AuditRecord", "ConflictOverride", "ConflictQuery", "DeadLetterKey", "DeadLetterQuery"}
ACCESS_AND_KEY_EXPORTS = {
    "ChannelStore",
    "EvictionRecord",
    "KeyStore",
    "MembershipRecord",
    "Resealed",
    "SEALED_TABLES",
    "ScopedEntity",
    "ScopedPage",
    "SealedRow",
    "SealedTable",
}


ATTACHMENT_EXPORTS = {
    "AttachmentRecord",
    "AttachmentRefRecord",
    "AttachmentState",
    "AttachmentStore",
    "MemoryAttachmentStore",
    "SqlAttachmentStore",
    "attachment_store_for",
}


INTEGRITY_EXPORTS = {"CheckpointRecord", "IntegrityStore", "VerificationRecord"}


def test_exported_members_are_deliberate() -> None:
    expected = EXPORTED | ADMIN_EXPORTS | ACCESS_AND_KEY_EXPORTS | ATTACHMENT_EXPORTS | INTEGRITY_EXPORTS
    assert set(syncstore.__all__) == expected
    assert len(syncstore.__all__) == len(expected)
    for name in syncstore.__all__:
        assert getattr(syncstore, name) is not None


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("memory://", MemoryStore),
        ("sqlite+aiosqlite:///some/file.db", SqlStore),
        ("postgresql+psycopg://user@localhost/db", SqlStore),
    ],
)
async def test_open_store_picks_the_backend_by_scheme(url: str, kind: type) -> None:
    store = open_store(url)
    try:
        assert isinstance(store, kind)
    finally:
        await store.close()


@pytest.mark.parametrize(
    "url", ["redis://localhost", "sqlite:///x.db", "postgresql://u@h/db", "mysql+aiomysql://h/db", "nonsense"]
)
def test_open_store_refuses_other_schemes(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported store URL scheme"):
        open_store(url)


async def test_faulty_store_passes_reads_through() -> None:
    inner = MemoryStore()
    store = FaultyStore(inner)
    assert store.inner is inner
    assert await store.list_tenants() == []
    await store.ping()
    await store.close()


def test_syncstore_imports_no_other_project_package() -> None:
    offenders = []
    for path in PACKAGE_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in PROJECT_PACKAGES - ALLOWED_PROJECT_IMPORTS:
                    offenders.append(f"{path.relative_to(PACKAGE_DIR)}: {name}")
    assert offenders == []


def test_no_storage_module_imports_another_ones_private_names() -> None:
    """A backend's parts get the shared state in their constructor; none reaches for a ``_private`` name."""
    offenders = []
    for path in PACKAGE_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("syncstore"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                offenders += [f"{path.relative_to(PACKAGE_DIR)}: {node.module}.{name}" for name in private]
    assert offenders == []


@pytest.mark.parametrize("store_type", [MemoryStore, SqlStore])
def test_each_backend_serves_every_interface_method(store_type: type) -> None:
    """The parts' methods are the store's own: every method of the store interfaces is on the class."""
    missing = [
        name
        for interface in INTERFACES
        for name, _ in inspect.getmembers(interface, inspect.iscoroutinefunction)
        if not name.startswith("_") and not inspect.iscoroutinefunction(getattr(store_type, name, None))
    ]
    assert missing == []
