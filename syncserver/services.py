"""The composition root: every service of the server, built from the settings in one place.

The app's lifespan and every CLI command call :func:`open_services` (or
:func:`build_services` on a store they already hold), so a service is wired
the same way whichever door a request comes in by. Building is free of I/O
except for opening the store; the app alone starts the fan-out and the live hub
(:meth:`Services.start`), because a one-shot command has no subscribers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from syncproto.schema import Schema
from syncserver.admin.audit import AuditLog
from syncserver.admin.conflicts import ConflictAdmin
from syncserver.admin.dead_letters import DeadLetterAdmin
from syncserver.admin.history import EntityHistoryService
from syncserver.admin.server_changes import ServerChanges
from syncserver.admin.store import admin_backend
from syncserver.attachments.backends import open_blob_store
from syncserver.attachments.blobstore import BlobStore
from syncserver.attachments.download import AttachmentReader
from syncserver.attachments.gc import AttachmentCollector
from syncserver.attachments.keyops import AttachmentKeys
from syncserver.attachments.refs import AttachmentPushService
from syncserver.attachments.status import AttachmentPullService
from syncserver.attachments.uploads import UploadService
from syncserver.fanout import Fanout, MemoryFanout
from syncserver.integrity.rebuild import EntityRepair
from syncserver.integrity.verify import Verifier
from syncserver.keys import devsecrets
from syncserver.keys.keyring import TenantKeyring
from syncserver.keys.operations import KeyOps
from syncserver.keys.providers import KeyProvider
from syncserver.keys.subjects import SubjectRequests
from syncserver.live import LiveHub
from syncserver.settings import Settings
from syncserver.sync.collections import load_schema
from syncserver.sync.conflicts import ConflictService
from syncserver.sync.dictionary_trainer import DictionaryTrainer
from syncstore import TRANSIENT_ERRORS, attachment_store_for, open_store
from syncstore.engine import durability_warnings
from syncstore.migrate import upgrade
from syncstore.sql import SqlStore
from syncstore.store import Store

__all__ = ["Services", "build_services", "open_backend", "open_fanout", "open_services"]

log = logging.getLogger("syncserver")

TRAINER = "server:dictionary"
"""The audit log's actor for the key rotation that installs a tenant's trained dictionary."""


@dataclass
class Services:
    """What the transports, the admin pages and the CLI work with; one instance per process."""

    settings: Settings
    schema: Schema
    key_provider: KeyProvider
    store: Store
    keyring: TenantKeyring
    fanout: Fanout
    blobs: BlobStore
    push: AttachmentPushService
    pull: AttachmentPullService
    uploads: UploadService
    attachment_reader: AttachmentReader
    attachment_keys: AttachmentKeys
    live: LiveHub
    conflicts: ConflictService
    conflict_admin: ConflictAdmin
    entity_history: EntityHistoryService
    dead_letter_admin: DeadLetterAdmin
    audit_log: AuditLog
    key_ops: KeyOps
    subjects: SubjectRequests
    integrity: Verifier
    repair: EntityRepair
    attachment_gc: AttachmentCollector
    owns_store: bool = field(default=True)

    async def start(self) -> None:
        """Subscribe to the fan-out and start the live hub (the server only)."""
        await self.fanout.start()
        await self.live.start(self.fanout)

    async def stop(self) -> None:
        await self.push.drained()  # pushes being committed still notify subscribers
        await self.live.stop()
        await self.fanout.stop()

    async def close(self) -> None:
        """Finish the pushes being committed and the export audit rows being written, then release the blob store,
        and the store when it was opened here."""
        await self.push.drained()
        await self.subjects.closing_rows_written()
        if self.push.dictionaries is not None:
            await self.push.dictionaries.close()
        await self.blobs.close()
        if self.owns_store:
            await self.store.close()


def build_services(
    settings: Settings,
    store: Store,
    *,
    key_provider: KeyProvider | None = None,
    schema: Schema | None = None,
    owns_store: bool = True,
) -> Services:
    """Wire every service over ``store``; ``key_provider`` and ``schema`` default to the settings' ones."""
    provider = key_provider if key_provider is not None else devsecrets.key_provider(settings)
    schema = schema if schema is not None else load_schema(settings.collections_file)
    keyring = TenantKeyring(store, provider, settings.key_cache_ttl_s)
    fanout = open_fanout(settings)
    meta = attachment_store_for(store)
    blobs = open_blob_store(settings.attachments, settings.data_dir)
    push = AttachmentPushService(
        meta, store, keyring, schema, settings.limits, settings.max_clock_skew_ms, notify=fanout.publish
    )
    pull = AttachmentPullService(meta, store, keyring, schema, settings.limits)
    uploads = UploadService(meta, blobs, keyring, settings.attachments)
    attachment_keys = AttachmentKeys(meta, blobs)
    admin_store = admin_backend(store)
    audit_log = AuditLog(admin_store)
    server_changes = ServerChanges(admin_store, push, audit_log)
    key_ops = KeyOps(
        store, keyring, provider, schema, attachments=attachment_keys, settle_ms=settings.key_cache_ttl_s * 1000
    )
    push.dictionaries = DictionaryTrainer(
        store,
        keyring,
        lambda tenant, trained: key_ops.rotate(tenant, TRAINER, trained),
        settings.dictionary_after_changes,
    )
    return Services(
        settings=settings,
        schema=schema,
        key_provider=provider,
        store=store,
        keyring=keyring,
        fanout=fanout,
        blobs=blobs,
        push=push,
        pull=pull,
        uploads=uploads,
        attachment_reader=AttachmentReader(meta, blobs, pull),
        attachment_keys=attachment_keys,
        live=LiveHub(store, pull, settings.live),
        conflicts=ConflictService(store, keyring, pull.state_visible),
        conflict_admin=ConflictAdmin(admin_store, keyring, pull, server_changes, audit_log),
        entity_history=EntityHistoryService(admin_store, keyring, pull, attachments=meta),
        dead_letter_admin=DeadLetterAdmin(admin_store, keyring, server_changes, audit_log),
        audit_log=audit_log,
        key_ops=key_ops,
        subjects=SubjectRequests(store, keyring, attachments=attachment_keys),
        integrity=Verifier(store, keyring, schema),
        repair=EntityRepair(store, keyring, schema),
        attachment_gc=AttachmentCollector(store, keyring, schema, uploads),
        owns_store=owns_store,
    )


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Open (and migrate, if configured) the store named by the settings, wire the services, close both after."""
    store = await open_backend(settings)
    try:
        services = build_services(settings, store)
    except BaseException:
        await store.close()
        raise
    try:
        yield services
    finally:
        await services.close()


def sqlite_path(url: str) -> Path | None:
    prefix = "sqlite+aiosqlite:///"
    if url.startswith(prefix) and url != prefix + ":memory:":
        return Path(url[len(prefix) :])
    return None


async def open_backend(settings: Settings) -> Store:
    """Migrate (if configured) and open the store named by ``SYNC_DATABASE_URL``."""
    path = sqlite_path(settings.database_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if settings.migrate_on_start and not settings.database_url.startswith("memory://"):
        await upgrade(settings.database_url)
    store = open_store(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    await warn_if_not_durable(store)
    return store


async def warn_if_not_durable(store: Store) -> None:
    """Log at start when an ``applied`` answer would not survive a power cut (SQLite NORMAL, PostgreSQL async)."""
    if not isinstance(store, SqlStore):
        return
    try:
        warnings = await durability_warnings(store.engine)
    except TRANSIENT_ERRORS as exc:  # the database is down: readiness reports it; check again at the next start
        log.info("durability not checked: the database is unavailable (%s)", type(exc).__name__)
        return
    for warning in warnings:
        log.warning("durability: %s", warning)


def open_fanout(settings: Settings) -> Fanout:
    """``SYNC_REDIS_URL``: unset or ``memory://`` -> in-process; ``redis://``/``rediss://`` -> Redis pub/sub."""
    url = settings.redis_url
    if url is None or url.startswith("memory://"):
        return MemoryFanout()
    from syncserver.fanout.redis import RedisFanout  # only deployments with Redis import the client

    return RedisFanout(url, settings.redis_prefix)
