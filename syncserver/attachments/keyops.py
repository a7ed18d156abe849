"""Key operations on attachments: usage per key version, re-encryption, erasure and export.

``KeyOps`` (``syncserver/keys/operations.py``) calls these beside its table work, so the
rules are the rows' rules:

A blob is the objects under one owner's prefix at one key version
(``<tenant>/<owner>/v<version>/``), read by every available or uploading row
whose ``blob_owner or id`` is that owner, at that version: several rows when
deduplicated, and possibly none of them the owner's own row (GC collects an
unreferenced owner while the others still read its objects).

* **usage**: every blob counts once under the key version its chunks are
  sealed with, whether or not its owner's row still exists, so ``keys destroy``
  refuses a version an attachment still needs.
* **reencrypt**: a blob not under the active version is read chunk by chunk
  from its owner's prefix (the owner id in each chunk's associated data, as
  ``SealedBlob`` reads it), sealed again under the new version into a new
  prefix (``v<new>/``), then every row using it moves to the new version by
  compare-and-set (its keyed hash of the content too), then the old objects go
  once no row uses them. A crash at any point leaves a readable blob (the rows
  name the version whose objects exist); running again resumes. A blob still
  being uploaded is left where it is (usage keeps counting it).
* **erase**: after the keys are destroyed (the chunks are unreadable from then
  on), every object under the tenant's prefix and every row are deleted.
* **export**: a user's attachments (the ones they uploaded), with their bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import NamedTuple

from msgspec import Struct
from msgspec.structs import replace

from syncserver.attachments import chunks
from syncserver.attachments.blobstore import BlobStore
from syncserver.attachments.chunks import ChunkError, SealedBlob
from syncserver.keys.keyring import TenantCipher
from syncstore.attachments import AttachmentRecord, AttachmentStore

PAGE = 500


def _blob(row: AttachmentRecord) -> tuple[str, int]:
    """The blob ``row`` reads: its owner's prefix (itself unless deduplicated) at its key version."""
    return row.blob_owner or row.id, row.key_version


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

    async def _blobs(self, tenant: str) -> dict[tuple[str, int], list[AttachmentRecord]]:
        """The rows using each blob, by (owner, key version): available and uploading rows (a refused one's
        objects are gone)."""
        blobs: dict[tuple[str, int], list[AttachmentRecord]] = {}
        for row in await self._all(tenant):
            if row.state != "refused":
                blobs.setdefault(_blob(row), []).append(row)
        return blobs

    async def usage(self, tenant: str) -> dict[int, int]:
        """Blobs (one per owner prefix and key version, however many rows read it) per key version."""
        usage: dict[int, int] = {}
        for _, version in await self._blobs(tenant):
            usage[version] = usage.get(version, 0) + 1
        return usage

    async def reencrypt(self, tenant: str, cipher: TenantCipher) -> tuple[int, int]:
        """Move every available blob to ``cipher.current_version``; returns (moved, failed)."""
        target = cipher.current_version
        moved = failed = 0
        for (owner, version), users in (await self._blobs(tenant)).items():
            if version == target or any(r.state != "available" for r in users):
                continue  # current, or still being uploaded (its upload seals it under ``version``)
            if len({(r.size, r.chunk_bytes) for r in users}) != 1:
                failed += 1  # rows disagreeing on the blob's shape: they were not deduplicated by this server
                continue
            try:
                digest = await self._reseal(cipher, tenant, owner, users[0], target)
            except ChunkError:
                failed += 1
                continue
            # The keyed hash moves to the new version too: dedup and a driver's download check it, and the old
            # version's key is destroyed once nothing is sealed under it.
            mac = cipher.mac(target, digest)
            in_use = False
            for row in users:
                if not await self.meta.update_attachment(
                    row, replace(row, key_version=target, mac=mac, mac_version=target, chunk_tokens=None)
                ):
                    now = await self.meta.get_attachment(tenant, row.id)  # moved meanwhile: deleted, or still here?
                    in_use |= now is not None and now.state != "refused" and _blob(now) == (owner, version)
            # A row deduplicated onto the owner after the rows were read re-reads the owner's row, sees it moved
            # and keeps its own objects (``UploadService._finish``); an owner whose row is gone gains no new users.
            # And a row deduplicated onto the owner's old version after the rows were read (an upload completing
            # while this blob was resealed; it re-read the owner before the owner moved) still reads it: kept, and
            # moved by the next run.
            if not in_use and not await self.meta.blob_users(tenant, owner, key_version=version):
                await self.blobs.delete(await self.blobs.list(chunks.prefix(tenant, owner) + f"v{version}/"))
            moved += 1
        return moved, failed

    async def _reseal(self, cipher: TenantCipher, tenant: str, owner: str, row: AttachmentRecord, target: int) -> bytes:
        """Seal ``owner``'s blob that ``row`` reads again under ``target``; returns its SHA-256 (the content, as its
        upload verified it)."""
        sealed = SealedBlob.of(self.blobs, cipher, row)
        content = hashlib.sha256()
        for index in range(sealed.count):
            data = await sealed.read_chunk(index)
            content.update(data)
            last = index == sealed.count - 1
            # Without a token: every re-encryption of this blob writes the same, verified content.
            blob = chunks.seal_chunk(cipher, owner, index, last, data, target, None)
            await self.blobs.put(chunks.chunk_key(tenant, owner, target, index), blob)
        return content.digest()

    async def erase(self, tenant: str) -> int:
        """Delete every object and row of the tenant (after its keys are destroyed); returns objects deleted."""
        keys = await self.blobs.list(f"{tenant}/")
        await self.blobs.delete(keys)
        for row in await self._all(tenant):
            await self.meta.delete_attachment(tenant, row.id)
        return len(keys)

    async def _rows_of(self, tenant: str, sub: str) -> AsyncIterator[AttachmentRecord]:
        """The rows ``sub`` uploaded, in id order, read a page at a time (never the whole tenant at once)."""
        after: str | None = None
        while page := await self.meta.list_attachments(tenant, after=after, limit=PAGE):
            for row in page:
                if row.user_sub == sub:
                    yield row
            after = page[-1].id

    async def export(self, tenant: str, sub: str, cipher: TenantCipher) -> AsyncIterator[ExportItem]:
        """A user's attachments (the ones they uploaded), in id order, each with its bytes to stream.

        An available attachment's chunks are all opened (``SealedBlob.verify``) before it is yielded: then
        ``content`` reads them again, chunk by chunk (``SealedBlob.read``: two chunks in memory), and raises
        ``ChunkError`` if one changed since. One that fails the check comes with ``failure`` and no content.
        Read each item's ``content`` before asking for the next item.
        """
        async for row in self._rows_of(tenant, sub):
            meta = ExportedAttachment(row.id, row.size, row.media_type, row.state, row.created_at, None)
            if row.state != "available":
                yield ExportItem(meta, None, None)
                continue
            blob = SealedBlob.of(self.blobs, cipher, row)
            try:
                await blob.verify()
            except ChunkError as exc:
                yield ExportItem(meta, None, exc)
                continue
            yield ExportItem(meta, blob.read(), None)


class ExportItem(NamedTuple):
    """One attachment of a user's export (``AttachmentKeys.export``)."""

    meta: ExportedAttachment
    """Its metadata; ``content_b64`` is always ``None`` here (the bytes are in ``content``)."""
    content: AsyncIterator[bytes] | None
    """Its plaintext, chunk by chunk, every chunk checked once already; ``None`` unless it is available and
    passed the check."""
    failure: ChunkError | None
    """Why its stored chunks failed the check, if they did."""
