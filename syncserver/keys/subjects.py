"""Data-subject requests: erase a tenant (crypto-shredding), export one user's data.

One service behind both the CLI (``syncserver tenant erase``, ``export-user``)
and the admin API (``/v1/admin/tenant/erase``, ``/v1/admin/users/{sub}/export``).
Both are audited with metadata only, like the key operations.

* **erase_tenant**: destroys the tenant's keys first, then deletes its rows.
* **export_user**: every change and dead letter of one ``sub``, decrypted.

Attachments (``syncserver.attachments.keyops``) follow the same rules:
``erase_tenant`` deletes their objects, ``export_user`` includes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from msgspec import Struct

from syncproto.hlc import iso
from syncproto.messages import Op
from syncserver.attachments.keyops import AttachmentKeys, ExportedAttachment
from syncserver.integrity import quarantine
from syncserver.keys.envelope import DecryptionError
from syncserver.keys.keyring import TenantCipher, TenantKeyring
from syncserver.keys.operations import PAGE, audit
from syncserver.sync import payloads
from syncstore.adminstore import AdminStore, DeadLetterQuery
from syncstore.keystore import KeyStore
from syncstore.store import Store, TenantNotFound


class EraseResult(Struct, gc=False):
    tenant: str
    keys_destroyed: int
    rows_deleted: dict[str, int]


class ExportedChange(Struct, gc=False):
    seq: int
    id: str
    collection: str
    entity: str
    replica: str
    n: int
    hlc: tuple[int, int]
    context: dict[str, int]
    created_at: str
    ops: list[Op]


class ExportedDeadLetter(Struct, gc=False):
    replica: str
    n: int
    id: str
    collection: str
    entity: str
    code: str
    message: str
    status: str
    created_at: str
    change: Any


class UserExport(Struct, gc=False):
    tenant: str
    sub: str
    exported_at: str
    replicas: list[str]
    changes: list[ExportedChange]
    dead_letters: list[ExportedDeadLetter]
    attachments: list[ExportedAttachment] = []
    unavailable: list[str] = []
    """Rows of the user that failed their integrity check and could not be exported
    (``changes/<seq>``, ``dead_letters/<replica>/<n>``); everything else is exported."""


class SubjectRequests:
    """Erasure and export over a store that is also a ``KeyStore`` and an ``AdminStore``."""

    def __init__(
        self,
        store: Store,
        keyring: TenantKeyring,
        clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        attachments: AttachmentKeys | None = None,
    ) -> None:
        if not (isinstance(store, KeyStore) and isinstance(store, AdminStore)):
            raise TypeError(f"{type(store).__name__} must implement KeyStore and AdminStore")
        self.store = store
        self.keys: KeyStore = store
        self.audit_log: AdminStore = store
        self.keyring = keyring
        self.clock = clock
        self.attachments = attachments

    async def erase_tenant(self, tenant: str, actor: str) -> EraseResult:
        """Crypto-shred: destroy every data key, then delete every row. Safe to run again after a crash."""
        if await self.store.get_tenant(tenant) is None:
            raise TenantNotFound(tenant)
        await self._audit(tenant, actor, "tenant.erase", tenant, {"phase": "start"})
        destroyed = await self.keys.destroy_tenant_keys(tenant)
        self.keyring.forget(tenant)
        objects = await self.attachments.erase(tenant) if self.attachments is not None else 0
        deleted = await self.keys.erase_tenant(tenant)
        if self.attachments is not None:
            deleted["attachment_objects"] = objects
        details = {"phase": "done", "keys_destroyed": destroyed, "rows_deleted": deleted}
        await self._audit(tenant, actor, "tenant.erase", tenant, details)
        return EraseResult(tenant, destroyed, deleted)

    async def export_user(self, tenant: str, sub: str, actor: str) -> UserExport:
        """Every change and dead letter pushed by ``sub``, decrypted."""
        cipher = await self.keyring.cipher(tenant)
        changes: list[ExportedChange] = []
        unavailable: list[str] = []
        after = 0
        while page := await self.keys.changes_by_user(tenant, sub, after, PAGE):
            for c in page:
                try:
                    ops = payloads.open_ops(cipher, c)
                except DecryptionError as exc:
                    quarantine.failed("changes", tenant, f"{c.collection}/{c.entity_id}@{c.seq}", exc)
                    unavailable.append(f"changes/{c.seq}")
                    continue
                changes.append(
                    ExportedChange(
                        c.seq,
                        c.change_id,
                        c.collection,
                        c.entity_id,
                        c.replica_id,
                        c.n,
                        c.hlc,
                        c.context,
                        iso(c.created_at),
                        ops,
                    )
                )
            after = page[-1].seq
        letters = await self._dead_letters(tenant, sub, cipher, unavailable)
        files = await self.attachments.export(tenant, sub, cipher) if self.attachments is not None else []
        replicas = sorted({c.replica for c in changes} | {d.replica for d in letters})
        details = {"changes": len(changes), "dead_letters": len(letters)}
        if files:
            details["attachments"] = len(files)
        if unavailable:
            details["unavailable"] = len(unavailable)
        await self._audit(tenant, actor, "user.export", sub, details)
        return UserExport(tenant, sub, iso(self.clock()), replicas, changes, letters, files, unavailable)

    async def _dead_letters(
        self, tenant: str, sub: str, cipher: TenantCipher, unavailable: list[str]
    ) -> list[ExportedDeadLetter]:
        found: list[ExportedDeadLetter] = []
        before = None
        query = DeadLetterQuery(user=sub)
        while page := await self.audit_log.find_dead_letters(tenant, before, PAGE, query):
            for d in page:
                try:
                    raw = payloads.open_dead_letter(cipher, d.replica_id, d.n, d.change_id, d.key_version, d.payload)
                except DecryptionError as exc:
                    quarantine.failed("dead_letters", tenant, f"{d.replica_id}/{d.n}", exc)
                    unavailable.append(f"dead_letters/{d.replica_id}/{d.n}")
                    continue
                found.append(
                    ExportedDeadLetter(
                        d.replica_id,
                        d.n,
                        d.change_id,
                        d.collection,
                        d.entity_id,
                        d.code,
                        d.message,
                        d.status,
                        iso(d.created_at),
                        raw,
                    )
                )
            last = page[-1]
            before = (last.created_at, last.replica_id, last.n)
        return found

    async def _audit(self, tenant: str | None, actor: str, action: str, target: str, details: dict[str, Any]) -> None:
        await audit(self.audit_log, self.clock(), tenant, actor, action, target, details)
