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
* **export**: a user's attachments (the ones they uploaded), with their bytes,
  each row read again just before its turn: one deleted during the export is
  left out (before its bytes begin; after, the export stops), one
  re-encrypted during it is read from its new objects.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import NamedTuple

from msgspec import Struct
from msgspec.structs import replace

from syncserver.attachments import chunks
from syncserver.attachments.blobstore import BlobStore
from syncserver.attachments.chunks import ChunkError, SealedBlob
from syncserver.keys.keyring import Ciphers, TenantCipher
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

    async def export(self, tenant: str, sub: str, ciphers: Ciphers) -> AsyncGenerator[ExportItem, None]:
        """A user's attachments (the ones they uploaded), in id order, each with its bytes to stream.

        Each row is read again just before its turn (the listing is a page old by then): one deleted since is
        left out, and its chunks are opened with a cipher holding its key version (``ciphers.cipher(tenant,
        [key_version])``: the key may have rotated since the export began). An available attachment's chunks
        are all opened (``SealedBlob.verify``) before it is yielded; if one fails, the row is read again: gone,
        it is left out; its blob moved meanwhile (``keys rotate`` then ``keys reencrypt``: another key version,
        owner or chunk tokens), the check starts over on the new row; unchanged, it is damaged and comes with
        ``failure`` and no content. ``content`` reads the chunks again (``_content``). Read each item's
        ``content`` before asking for the next item.
        """
        async for listed in self._rows_of(tenant, sub):
            row = await self.meta.get_attachment(tenant, listed.id)
            if row is None or not _same_attachment(listed, row):
                continue  # deleted since it was listed (GC, the discard of a refused upload)
            item = await self._export_item(tenant, row, ciphers)
            if item is not None:
                yield item

    async def _export_item(self, tenant: str, row: AttachmentRecord, ciphers: Ciphers) -> ExportItem | None:
        """``row`` (just read) checked and ready to stream; ``None`` if it was deleted while it was checked."""
        while True:
            if row.state != "available":
                return ExportItem(_exported(row), None, None)
            blob = await self._sealed(tenant, row, ciphers)
            try:
                await blob.verify()
            except ChunkError as exc:
                now = await self.meta.get_attachment(tenant, row.id)
                if now is None or not _same_attachment(row, now):
                    return None
                if now.state == "available" and not _moved(row, now):
                    return ExportItem(_exported(row), None, exc)  # the blob it reads is damaged
                row = now  # moved (or no longer available): check it as it is now
                continue
            return ExportItem(_exported(row), self._content(tenant, row, blob, ciphers), None)

    async def _sealed(self, tenant: str, row: AttachmentRecord, ciphers: Ciphers) -> SealedBlob:
        """The blob ``row`` reads, with a cipher holding its key version."""
        return SealedBlob.of(self.blobs, await ciphers.cipher(tenant, [row.key_version]), row)

    async def _content(
        self, tenant: str, row: AttachmentRecord, blob: SealedBlob, ciphers: Ciphers
    ) -> AsyncGenerator[bytes, None]:
        """The plaintext of ``row``'s blob (checked once already), chunk by chunk (``SealedBlob.read``).

        On a ``ChunkError`` the row is read again. Its blob moved meanwhile (re-encrypted under another key
        version, or its objects otherwise renamed): the reading goes on from the new row's objects, at the
        first byte not yet given out (the plaintext is the same). Gone (or another attachment under its id, or
        no longer available): ``AttachmentGone``. Unchanged: the ``ChunkError``, its stored bytes changed.
        """
        sent = 0
        while True:
            reading = blob.read(sent)
            try:
                async for piece in reading:
                    sent += len(piece)
                    yield piece
                return
            except ChunkError as exc:
                now = await self.meta.get_attachment(tenant, row.id)
                if now is None or not _same_attachment(row, now) or now.state != "available":
                    raise AttachmentGone(f"attachment {row.id} was deleted while it was exported") from exc
                if not _moved(row, now) or now.size != row.size:
                    raise
                row = now
                blob = await self._sealed(tenant, row, ciphers)
            finally:
                await _close(reading)  # at once, its read ahead with it, also if the export stops here


async def _close(reading: AsyncIterator[bytes]) -> None:
    aclose = getattr(reading, "aclose", None)
    if aclose is not None:
        await aclose()


def _exported(row: AttachmentRecord) -> ExportedAttachment:
    return ExportedAttachment(row.id, row.size, row.media_type, row.state, row.created_at, None)


def _same_attachment(before: AttachmentRecord, now: AttachmentRecord) -> bool:
    """``now`` is the row ``before`` was, not another created under its id since ``before`` was deleted."""
    return (now.created_at, now.user_sub) == (before.created_at, before.user_sub)


def _moved(before: AttachmentRecord, now: AttachmentRecord) -> bool:
    """``now`` reads other objects than ``before`` did (its blob was re-encrypted, or its chunks renamed)."""
    return (_blob(now), now.chunk_tokens) != (_blob(before), before.chunk_tokens)


class AttachmentGone(ChunkError):
    """An attachment was deleted while its bytes were being exported (not damage: nothing of it is wrong)."""


class ExportItem(NamedTuple):
    """One attachment of a user's export (``AttachmentKeys.export``)."""

    meta: ExportedAttachment
    """Its metadata; ``content_b64`` is always ``None`` here (the bytes are in ``content``)."""
    content: AsyncGenerator[bytes, None] | None
    """Its plaintext, chunk by chunk, every chunk checked once already; ``None`` unless it is available and
    passed the check. Raises ``ChunkError`` if its stored bytes change while they are read, ``AttachmentGone``
    if it is deleted meanwhile; one re-encrypted meanwhile is read on from its new objects."""
    failure: ChunkError | None
    """Why its stored chunks failed the check, if they did."""
