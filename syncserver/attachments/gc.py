"""Garbage collection of attachments (``syncserver gc``): mark what live state references, sweep the rest.

* **Mark**: every entity of the tenant is opened; each attachment referenced by
  a register's value or any of its siblings in a live (not deleted) entity gets
  ``referenced_at = now``.
* **Sweep**: an available or refused attachment whose last reference (or, never
  referenced, its last update) is older than the retention period is deleted,
  row first, then its objects once no other row shares them (dedup). An
  unfinished upload past its ``expires_at`` is deleted (tus expiration).
  An owner's row can go while deduplicated rows still read its objects: they
  stay under its prefix, and its id cannot name a new upload until the last of
  those rows goes (``UploadService``).

**Damaged rows.** An entity row that fails its integrity check (it does not
open, or is not what the change log says is current) is set aside like a pull
sets it aside (``syncserver.integrity.quarantine``: logged at ERROR and counted
in ``sync_integrity_failures_total``) and the mark goes on with the other rows. Its
references are unknown, so that tenant's **sweep of unreferenced attachments is
skipped** for this run (``GcResult.damaged`` names the rows): any attachment
might be one of them. Unfinished uploads past their expiry are still deleted
(references do not matter for them). ``syncserver repair`` rebuilds the rows;
the next run collects as usual.

Pitfall: a change that references an attachment between mark and sweep does not
save it if it had already been unreferenced for the whole retention period; use
a retention far longer than devices stay offline (default 30 days).
"""

from __future__ import annotations

import logging

from msgspec import Struct

from syncproto.attachments import attachment_ref
from syncproto.crdt import Register
from syncproto.merge import is_deleted
from syncproto.schema import Schema
from syncserver.attachments.uploads import UploadService
from syncserver.integrity import quarantine
from syncserver.keys.envelope import DecryptionError
from syncserver.keys.keyring import Ciphers
from syncstore.attachments import AttachmentRecord
from syncstore.store import Store

PAGE = 1000
log = logging.getLogger("syncserver.attachments.gc")


class GcResult(Struct, gc=False):
    referenced: int
    deleted: int
    """Attachments no live value or sibling referenced for the retention period."""
    abandoned: int
    """Unfinished uploads past their expiry."""
    damaged: list[str] = []
    """Entity rows (``collection/id``) that failed their integrity check: when any, nothing was ``deleted``."""


class Mark(Struct, gc=False):
    """What the mark found: the ids referenced by the rows that opened, and the rows that did not."""

    referenced: set[str]
    damaged: list[str]


class AttachmentCollector:
    def __init__(self, store: Store, ciphers: Ciphers, schema: Schema, uploads: UploadService) -> None:
        self.store = store
        self.ciphers = ciphers
        self.schema = schema
        self.uploads = uploads
        self.meta = uploads.meta

    async def collect(self, tenant: str, now_ms: int) -> GcResult:
        """Mark, then sweep; with damaged rows (see the module docs) only abandoned uploads are swept."""
        marked = await self.mark(tenant, now_ms)
        live, sweep = marked.referenced, not marked.damaged
        if not sweep:
            log.error(
                "attachment GC kept every unreferenced attachment of the tenant: entity rows failed their "
                "integrity check, and what they reference is unknown (run syncserver repair)",
                extra={"tenant": tenant, "rows": marked.damaged[:20], "damaged": len(marked.damaged)},
            )
        cutoff = now_ms - self.uploads.settings.retention_s * 1000
        deleted = abandoned = 0
        after: str | None = None
        while page := await self.meta.list_attachments(tenant, after=after, limit=PAGE):
            after = page[-1].id
            for row in page:
                if row.state == "uploading" and row.expires_at < now_ms:
                    await self.uploads.discard(row)
                    abandoned += 1
                elif sweep and row.state != "uploading" and row.id not in live and _last_seen(row) < cutoff:
                    await self.uploads.discard(row)
                    deleted += 1
        return GcResult(len(live), deleted, abandoned, marked.damaged)

    async def mark(self, tenant: str, now_ms: int) -> Mark:
        """Ids referenced by live values or siblings now; their ``referenced_at`` becomes ``now_ms``.

        A row that fails its integrity check is set aside (``quarantine``) and named in ``Mark.damaged``.
        """
        found: set[str] = set()
        damaged: list[str] = []
        after = 0
        while page := await self.store.pull(tenant, after, PAGE):
            cipher = await self.ciphers.cipher(tenant, {row.key_version for row in page})
            for row in page:
                try:
                    stored = quarantine.open_current(cipher, row)
                except DecryptionError as exc:
                    quarantine.failed("entities", tenant, f"{row.collection}/{row.entity_id}", exc)
                    damaged.append(f"{row.collection}/{row.entity_id}")
                    continue
                if is_deleted(stored.state, self.schema.get(row.collection).on_delete):
                    continue
                for value in stored.state.fields.values():
                    if isinstance(value, Register):
                        found.update(ref.id for s in value.siblings if (ref := attachment_ref(s.value)) is not None)
            after = page[-1].seq
        await self.meta.mark_referenced(tenant, sorted(found), now_ms)
        return Mark(found, damaged)


def _last_seen(row: AttachmentRecord) -> int:
    return max(row.referenced_at or 0, row.updated_at)
