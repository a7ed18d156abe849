"""Key operations on attachments: usage per key version, re-encryption, erasure and export.

``KeyOps`` (``syncserver/keys/operations.py``) calls these beside its table work, so the
rules are the rows' rules:

* **usage**: every blob counts under the key version its chunks are sealed
  with, so ``keys destroy`` refuses a version an attachment still needs.
* **reencrypt**: a blob not under the active version is read chunk by chunk,
  sealed again under the new version into a new prefix (``v<new>/``), then
  every row using it moves to the new version by compare-and-set (its keyed
  hash of the content too), then the old objects go. A crash at any point leaves a readable blob (the rows name the
  version whose objects exist); running again resumes.
* **erase**: after the keys are destroyed (the chunks are unreadable from then
  on), every object under the tenant's prefix and every row are deleted.
* **export**: a user's attachments (the ones they uploaded), with their bytes.
"""

from __future__ import annotations

import base64
import hashlib

from msgspec import Struct
from msgspec.structs import replace

from syncserver.attachments import chunks
from syncserver.attachments.blobstore import BlobStore
from syncserver.attachments.chunks import ChunkError, SealedBlob
from syncserver.keys.keyring import TenantCipher
from syncstore.attachments import AttachmentRecord, AttachmentStore

PAGE = 500


class ExportedAttachment(Struct, gc=False):
    id: str
    size: int
    media_type: str
    state: str
    created_at: int
    content_b64: str | None
    """The bytes (base64), for available attachments; ``None`` otherwise."""


class AttachmentKeys:
    def __init__(self, meta: AttachmentStore, blobs: BlobStore) -> None:
        self.meta = meta
        self.blobs = blobs

    async def _all(self, tenant: str) -> list[AttachmentRecord]:
        rows: list[AttachmentRecord] = []
        after: str | None = None
        while page := await self.meta.list_attachments(tenant, after=after, limit=PAGE):
            rows += page
            after = page[-1].id
        return rows

    async def usage(self, tenant: str) -> dict[int, int]:
        """Blobs (objects of available or uploading rows) per key version."""
        usage: dict[int, int] = {}
        for row in await self._all(tenant):
            if row.state != "refused" and row.blob_owner in (None, row.id):
                usage[row.key_version] = usage.get(row.key_version, 0) + 1
        return usage

    async def reencrypt(self, tenant: str, cipher: TenantCipher) -> tuple[int, int]:
        """Move every available blob to ``cipher.current_version``; returns (moved, failed)."""
        target = cipher.current_version
        moved = failed = 0
        rows = await self._all(tenant)
        for owner in [r for r in rows if r.state == "available" and r.blob_owner == r.id and r.key_version != target]:
            try:
                digest = await self._reseal(cipher, owner, target)
            except ChunkError:
                failed += 1
                continue
            # The keyed hash moves to the new version too: dedup and a driver's download check it, and the old
            # version's key is destroyed once nothing is sealed under it.
            mac = cipher.mac(target, digest)
            users = [r for r in rows if r.blob_owner == owner.id and r.key_version == owner.key_version]
            for row in users:
                await self.meta.update_attachment(row, replace(row, key_version=target, mac=mac, mac_version=target))
            remaining = await self.meta.list_attachments(tenant, limit=PAGE)
            if not any(r.blob_owner == owner.id and r.key_version == owner.key_version for r in remaining):
                old = chunks.prefix(tenant, owner.id) + f"v{owner.key_version}/"
                await self.blobs.delete(await self.blobs.list(old))
            moved += 1
        return moved, failed

    async def _reseal(self, cipher: TenantCipher, row: AttachmentRecord, target: int) -> bytes:
        """Seal the blob again under ``target``; returns its SHA-256 (the content, as its upload verified it)."""
        sealed = SealedBlob(self.blobs, cipher, row.tenant_id, row.id, row.key_version, row.size, row.chunk_bytes)
        content = hashlib.sha256()
        for index in range(sealed.count):
            data = await sealed.read_chunk(index)
            content.update(data)
            last = index == sealed.count - 1
            blob = chunks.seal_chunk(cipher, row.id, index, last, data, target)
            await self.blobs.put(chunks.chunk_key(row.tenant_id, row.id, target, index), blob)
        return content.digest()

    async def erase(self, tenant: str) -> int:
        """Delete every object and row of the tenant (after its keys are destroyed); returns objects deleted."""
        keys = await self.blobs.list(f"{tenant}/")
        await self.blobs.delete(keys)
        for row in await self._all(tenant):
            await self.meta.delete_attachment(tenant, row.id)
        return len(keys)

    async def export(self, tenant: str, sub: str, cipher: TenantCipher) -> list[ExportedAttachment]:
        found = []
        for row in await self._all(tenant):
            if row.user_sub != sub:
                continue
            content = None
            if row.state == "available":
                owner = row.blob_owner or row.id
                blob = SealedBlob(self.blobs, cipher, tenant, owner, row.key_version, row.size, row.chunk_bytes)
                content = base64.b64encode(b"".join([piece async for piece in blob.read()])).decode()
            found.append(ExportedAttachment(row.id, row.size, row.media_type, row.state, row.created_at, content))
        return found
