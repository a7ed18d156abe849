"""Key lifecycle: rotate, re-encrypt, destroy a version, rotate the master key; rebuild channel rows.

One service behind both the CLI (``syncserver keys ...``, ``channels reindex``)
and the admin API (``/v1/admin/keys``...); erasure and export are in
``syncserver.keys.subjects``. Every action
appends to the audit log, with metadata only: versions, counts, key
fingerprints, never a key or a value.

* **rotate**: a new data-key version becomes active at once (in this process;
  other processes pick it up when their keyring cache entry expires, at most
  ``SYNC_KEY_CACHE_TTL_S`` later). Older versions stay for reading.
* **reencrypt**: moves every cell not sealed under the active version to it,
  table by table in primary-key order, one batch per transaction. A batch
  writes compare-and-set, so a concurrent push always wins and a crash loses at
  most one uncommitted batch; running it again resumes, because it only ever
  looks for cells still under an old version.
* **rotate_master**: rewraps every data key under the provider's current master
  key (the provider still unwraps with the previous one). No payload is read.

Attachments (``syncserver.attachments.keyops``) follow the same rules: their
blobs count in the usage of their key version and ``reencrypt`` moves them.
So do the change log's checkpoints (``chain_checkpoints``): each is MAC'd under
the version active when it was written, counts in that version's usage, and
``reencrypt`` checks its MAC under that version and MACs it again under the active
one, compare-and-set (a checkpoint whose MAC is wrong is reported, never re-MAC'd).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from typing import Any

import msgspec
from msgspec import Struct

from syncproto.hlc import iso
from syncproto.schema import Schema
from syncserver.attachments.keyops import AttachmentKeys
from syncserver.auth.scopes import ChannelError, entity_channels
from syncserver.integrity import chain
from syncserver.keys.envelope import DecryptionError
from syncserver.keys.keyring import TenantCipher, TenantKeyring, wrap_aad
from syncserver.keys.providers import KeyProvider, KeyProviderError
from syncserver.sync import payloads
from syncstore.adminstore import AdminStore, AuditRecord
from syncstore.channels import ChannelStore
from syncstore.keystore import CHECKPOINTS, SEALED_TABLES, KeyStore, Remac, Resealed, SealedRow, SealedTable
from syncstore.store import Store, TenantNotFound

Progress = Callable[[str, int], None]
"""Called with a table name and how many more cells of it were handled."""

PAGE = 1000


class KeyVersionView(Struct, gc=False):
    version: int
    state: str
    master_key_id: str
    created_at: str
    rows: int
    """Cells sealed under this version, in all tables."""
    dictionary: bool = False
    """Whether the version carries a trained compression dictionary (ADR 0034)."""


class KeyStatus(Struct, gc=False):
    tenant: str
    active_version: int
    master_key_id: str
    """The fingerprint of the master key new data keys are wrapped with."""
    versions: list[KeyVersionView]
    stale_rows: int
    """Cells not yet under the active version: what ``reencrypt`` would move."""


class RotateResult(Struct, gc=False):
    tenant: str
    version: int
    previous: int
    dictionary: bool = False
    """Whether the new version has a compression dictionary (carried from the previous one, or trained)."""


class Carry(enum.Enum):
    """``rotate``'s default: the new version takes the active version's dictionary."""

    CARRY = "carry"


CARRY = Carry.CARRY


class ReencryptResult(Struct, gc=False):
    tenant: str
    version: int
    resealed: int
    skipped: int
    """Cells a concurrent write changed first (they are under the active key already, or the next run takes them)."""
    failed: int
    """Cells that did not open under their recorded key: reported, never overwritten."""
    remaining: int
    """Cells still under an old version after this run (0 when done)."""


class MasterRotateResult(Struct, gc=False):
    master_key_id: str
    tenants: int
    rewrapped: int


class KeyOps:
    """Key lifecycle over a store that is also a ``KeyStore``, ``ChannelStore`` and ``AdminStore``."""

    def __init__(
        self,
        store: Store,
        keyring: TenantKeyring,
        provider: KeyProvider,
        schema: Schema,
        clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        attachments: AttachmentKeys | None = None,
        settle_ms: int = 0,
    ) -> None:
        """``settle_ms``: how long a process may keep a tenant's keys cached (``SYNC_KEY_CACHE_TTL_S``); a retired
        version cannot be destroyed sooner after its retirement (``destroy_version``)."""
        if not (isinstance(store, KeyStore) and isinstance(store, AdminStore) and isinstance(store, ChannelStore)):
            raise TypeError(f"{type(store).__name__} must implement KeyStore, ChannelStore and AdminStore")
        self.store = store
        self.keys: KeyStore = store
        self.audit_log: AdminStore = store
        self.access: ChannelStore = store
        self.keyring = keyring
        self.provider = provider
        self.schema = schema
        self.clock = clock
        self.attachments = attachments
        self.settle_ms = settle_ms

    async def _usage(self, tenant: str) -> dict[str, dict[int, int]]:
        """Cells per table and key version, attachment blobs included (as table ``attachments``)."""
        usage = dict(await self.keys.key_usage(tenant))
        if self.attachments is not None:
            usage["attachments"] = await self.attachments.usage(tenant)
        return usage

    # --- status and rotation --------------------------------------------------

    async def status(self, tenant: str) -> KeyStatus:
        wrapped = await self.store.tenant_keys(tenant)
        if not wrapped:
            raise TenantNotFound(tenant)
        usage = await self._usage(tenant)
        rows = {k.version: sum(t.get(k.version, 0) for t in usage.values()) for k in wrapped}
        active = max([k.version for k in wrapped if k.state == "active"] or [0])
        versions = [
            KeyVersionView(
                k.version, k.state, k.master_key_id, iso(k.created_at), rows[k.version], k.dictionary is not None
            )
            for k in wrapped
        ]
        stale = sum(n for t in usage.values() for v, n in t.items() if v != active)
        return KeyStatus(tenant, active, self.provider.key_id, versions, stale)

    async def rotate(self, tenant: str, actor: str, dictionary: bytes | Carry | None = CARRY) -> RotateResult:
        """Add a data-key version and make it the active one.

        The new version gets ``dictionary`` (``syncserver.keys.dictionary``), or by default the active
        version's own, so a rotation never loses the tenant's compression.
        """
        wrapped = await self.store.tenant_keys(tenant)
        if not wrapped:
            raise TenantNotFound(tenant)
        previous = max(k.version for k in wrapped)
        version = previous + 1
        if isinstance(dictionary, Carry):
            self.keyring.forget(tenant)
            active = (await self.keyring.cipher(tenant)).dictionary()
            dictionary = None if active is None else active.data
        try:
            await self.keys.add_tenant_key(self.keyring.new_key(tenant, version, dictionary))
        except ValueError as exc:
            raise KeyOpError(f"another rotation created key version {version} first; run it again") from exc
        self.keyring.forget(tenant)
        details = {"version": version, "previous": previous, "dictionary": dictionary is not None}
        await self._audit(tenant, actor, "key.rotate", f"key/{version}", details)
        return RotateResult(tenant, version, previous, dictionary is not None)

    async def destroy_version(self, tenant: str, version: int, actor: str) -> int:
        """Destroy one retired version; refuses while any cell is still sealed under it, and until every
        process has dropped its cached keys since the version was retired.

        Pitfall: a server that cached the tenant's keys before the rotation keeps sealing new rows under the
        retired version for up to ``settle_ms`` (``SYNC_KEY_CACHE_TTL_S``). Destroying it sooner would make
        those rows, acknowledged to their devices, unreadable: so the version must have been retired (the next
        version created) at least that long ago, and then ``reencrypt`` moves what was written meanwhile.
        """
        wrapped = {k.version: k for k in await self.store.tenant_keys(tenant)}
        if version not in wrapped:
            raise KeyOpError(f"tenant {tenant!r} has no key version {version}")
        if wrapped[version].state == "active":
            raise KeyOpError("the active version cannot be destroyed; rotate first")
        usage = await self._usage(tenant)
        in_use = sum(t.get(version, 0) for t in usage.values())
        if in_use:
            raise KeyOpError(f"{in_use} rows are still sealed under version {version}; run reencrypt first")
        retired_at = min((k.created_at for v, k in wrapped.items() if v > version), default=0)
        wait_ms = retired_at + self.settle_ms - self.clock()
        if wait_ms > 0:
            raise KeyOpError(
                f"version {version} was retired less than SYNC_KEY_CACHE_TTL_S ({self.settle_ms // 1000} s) ago: "
                f"servers may still write under it; wait {-(-wait_ms // 1000)} s, run reencrypt again, then destroy"
            )
        destroyed = await self.keys.destroy_tenant_keys(tenant, [version])
        self.keyring.forget(tenant)
        await self._audit(tenant, actor, "key.destroy", f"key/{version}", {"version": version})
        return destroyed

    # --- re-encryption --------------------------------------------------------

    async def reencrypt(
        self,
        tenant: str,
        actor: str,
        *,
        batch_size: int = 500,
        pause_s: float = 0.0,
        max_rows: int | None = None,
        progress: Progress | None = None,
    ) -> ReencryptResult:
        """Move cells to the active version; resumable (see the module docs). ``max_rows`` bounds one call."""
        self.keyring.forget(tenant)  # the active version as stored now, not as cached
        cipher = await self.keyring.cipher(tenant)
        target = cipher.current_version
        await self._audit(tenant, actor, "key.reencrypt", f"key/{target}", {"version": target, "phase": "start"})
        totals = {"resealed": 0, "skipped": 0, "failed": 0, "handled": 0}
        for table in SEALED_TABLES:
            after: tuple[str | int, ...] | None = None
            while max_rows is None or totals["handled"] < max_rows:
                rows = await self.keys.sealed_rows(tenant, table, not_version=target, after=after, limit=batch_size)
                if not rows:
                    break
                await self._reseal_batch(tenant, table, cipher, rows, totals)
                after = rows[-1].key
                if progress is not None:
                    progress(table, len(rows))
                if pause_s:
                    await asyncio.sleep(pause_s)
        after_seq: int | None = None
        while max_rows is None or totals["handled"] < max_rows:
            marks = await self.keys.checkpoint_macs(tenant, not_version=target, after=after_seq, limit=batch_size)
            if not marks:
                break
            remacs = []
            for mark in marks:
                try:
                    mac = chain.remac_checkpoint(cipher, mark)
                except DecryptionError:
                    mac = None
                if mac is None:
                    totals["failed"] += 1
                    continue
                remacs.append(Remac(mark.seq, mark.key_version, mark.mac, target, mac))
            done = await self.keys.remac_checkpoints(tenant, remacs)
            totals["resealed"] += done
            totals["skipped"] += len(remacs) - done
            totals["handled"] += len(marks)
            after_seq = marks[-1].seq
            if progress is not None:
                progress(CHECKPOINTS, len(marks))
            if pause_s:
                await asyncio.sleep(pause_s)
        if self.attachments is not None and (max_rows is None or totals["handled"] < max_rows):
            moved, failed = await self.attachments.reencrypt(tenant, cipher)
            totals["resealed"] += moved
            totals["failed"] += failed
        usage = await self._usage(tenant)
        remaining = sum(n for t in usage.values() for v, n in t.items() if v != target)
        result = ReencryptResult(
            tenant, target, totals["resealed"], totals["skipped"], totals["failed"], remaining=remaining
        )
        details = {"version": target, "phase": "done", **msgspec.structs.asdict(result)}
        await self._audit(tenant, actor, "key.reencrypt", f"key/{target}", details)
        return result

    async def _reseal_batch(
        self, tenant: str, table: SealedTable, cipher: TenantCipher, rows: list[SealedRow], totals: dict[str, int]
    ) -> None:
        updates = []
        for row in rows:
            row_id = payloads.sealed_row_id(table, row.names)
            try:
                # Framed again: a body compressed against the old version's dictionary must be compressed
                # against the new version's (or the built-in one) before it is sealed under the new key.
                body = payloads.unframe(cipher, row.key_version, cipher.open(table, row_id, row.key_version, row.blob))
            except DecryptionError:
                totals["failed"] += 1
                continue
            version, blob = cipher.seal(table, row_id, payloads.frame(cipher, body))
            updates.append(Resealed(row.key, row.key_version, row.blob, version, blob))
        done = await self.keys.reseal(tenant, table, updates)
        totals["resealed"] += done
        totals["skipped"] += len(updates) - done
        totals["handled"] += len(rows)

    async def stale_rows(self, tenant: str) -> dict[str, int]:
        """Per table, how many cells ``reencrypt`` still has to move (for progress totals)."""
        self.keyring.forget(tenant)
        target = (await self.keyring.cipher(tenant)).current_version
        usage = await self._usage(tenant)
        return {t: sum(n for v, n in versions.items() if v != target) for t, versions in usage.items()}

    # --- master key -----------------------------------------------------------

    async def rotate_master(self, actor: str, progress: Progress | None = None) -> MasterRotateResult:
        """Rewrap every data key not yet under the provider's current master key. Resumable."""
        target = self.provider.key_id
        tenants = await self.store.list_tenants()
        rewrapped = 0
        for tenant in tenants:
            for key in await self.store.tenant_keys(tenant.id):
                if key.state == "destroyed" or key.master_key_id == target:
                    continue
                aad = wrap_aad(tenant.id, key.version)
                try:
                    data_key = self.provider.unwrap(key.wrapped, aad)
                except KeyProviderError as exc:
                    raise KeyOpError(
                        f"data key {tenant.id}/v{key.version} (master key {key.master_key_id}) does not unwrap: "
                        "set SYNC_MASTER_KEY_PREVIOUS to the master key it was wrapped with"
                    ) from exc
                if await self.keys.rewrap_tenant_key(key, self.provider.wrap(data_key, aad), target):
                    rewrapped += 1
            self.keyring.forget(tenant.id)
            if progress is not None:
                progress("tenants", 1)
        details = {"to": target, "tenants": len(tenants), "rewrapped": rewrapped}
        await self._audit(None, actor, "master_key.rotate", target, details)
        return MasterRotateResult(target, len(tenants), rewrapped)

    # --- channel rows ----------------------------------------------------------

    async def reindex_channels(self, tenant: str, actor: str, progress: Progress | None = None) -> int:
        """Rebuild every entity's channel rows from its state (after a migration or a template change).

        Returns how many entities it updated. An entity changed meanwhile is skipped: its push wrote its rows.
        """
        cipher = await self.keyring.cipher(tenant)
        updated = 0
        after = 0
        while page := await self.store.pull(tenant, after, PAGE):
            for row in page:
                stored = payloads.open_entity(cipher, row)
                try:
                    channels = entity_channels(self.schema.get(row.collection), stored.state)
                except ChannelError:
                    channels = frozenset()  # unstorable channels: visible to tenant-wide roles only
                if await self.access.set_entity_channels(
                    tenant, row.collection, row.entity_id, row.seq, sorted(channels)
                ):
                    updated += 1
            after = page[-1].seq
            if progress is not None:
                progress("entities", len(page))
        await self._audit(tenant, actor, "channels.reindex", tenant, {"entities": updated})
        return updated

    async def _audit(self, tenant: str | None, actor: str, action: str, target: str, details: dict[str, Any]) -> None:
        await audit(self.audit_log, self.clock(), tenant, actor, action, target, details)


async def audit(
    log: AdminStore, now_ms: int, tenant: str | None, actor: str, action: str, target: str, details: dict[str, Any]
) -> None:
    """Append one audit entry: metadata only (versions, counts, fingerprints), never a key or a value."""
    await log.append_audit(AuditRecord(0, tenant, actor, action, target, msgspec.json.encode(details).decode(), now_ms))


class KeyOpError(Exception):
    """A key operation that must not proceed; the message says why and what to do."""
