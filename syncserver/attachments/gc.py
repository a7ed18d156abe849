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

Pitfall: a change that references an attachment between mark and sweep does not
save it if it had already been unreferenced for the whole retention period; use
a retention far longer than devices stay offline (default 30 days).
"""

from __future__ import annotations

from msgspec import Struct

from syncproto.attachments import attachment_ref
from syncproto.crdt import Register
from syncproto.merge import is_deleted
from syncproto.schema import Schema
from syncserver.attachments.uploads import UploadService
from syncserver.keys.keyring import Ciphers
from syncserver.sync import payloads
from syncstore.attachments import AttachmentRecord
from syncstore.store import Store

PAGE = 1000


class GcResult(Struct, gc=False):
    referenced: int
    deleted: int
    """Attachments no live value or sibling referenced for the retention period."""
    abandoned: int
    """Unfinished uploads past their expiry."""


class AttachmentCollector:
    def __init__(self, store: Store, ciphers: Ciphers, schema: Schema, uploads: UploadService) -> None:
        self.store = store
        self.ciphers = ciphers
        self.schema = schema
        self.uploads = uploads
        self.meta = uploads.meta

    async def collect(self, tenant: str, now_ms: int) -> GcResult:
        live = await self.mark(tenant, now_ms)
        cutoff = now_ms - self.uploads.settings.retention_s * 1000
        deleted = abandoned = 0
        after: str | None = None
        while page := await self.meta.list_attachments(tenant, after=after, limit=PAGE):
            after = page[-1].id
            for row in page:
                if row.state == "uploading" and row.expires_at < now_ms:
                    await self.uploads.discard(row)
                    abandoned += 1
                elif row.state != "uploading" and row.id not in live and _last_seen(row) < cutoff:
                    await self.uploads.discard(row)
                    deleted += 1
        return GcResult(len(live), deleted, abandoned)

    async def mark(self, tenant: str, now_ms: int) -> set[str]:
        """Ids referenced by live values or siblings now; their ``referenced_at`` becomes ``now_ms``."""
        found: set[str] = set()
        after = 0
        while page := await self.store.pull(tenant, after, PAGE):
            cipher = await self.ciphers.cipher(tenant, {row.key_version for row in page})
            for row in page:
                stored = payloads.open_entity(cipher, row)
                if is_deleted(stored.state, self.schema.get(row.collection).on_delete):
                    continue
                for value in stored.state.fields.values():
                    if isinstance(value, Register):
                        found.update(ref.id for s in value.siblings if (ref := attachment_ref(s.value)) is not None)
            after = page[-1].seq
        await self.meta.mark_referenced(tenant, sorted(found), now_ms)
        return found


def _last_seen(row: AttachmentRecord) -> int:
    return max(row.referenced_at or 0, row.updated_at)
