"""The upload state machine behind the tus routes: create, resume, receive, verify, refuse.

An attachment row (``syncstore.attachments``) goes ``uploading`` -> ``available``
(bytes complete and equal to the declared size and SHA-256), or to ``refused``
(too large, media type not allowed, hash mismatch): a dead letter with a stable
code, kept for admins, that never holds back another upload or any change.

Receiving a PATCH (``receive``):

1. the body is read as a stream; bytes are hashed (SHA-256 of the whole file,
   plus the tus ``Upload-Checksum`` of this request) and sealed chunk by chunk
   as soon as a whole chunk is buffered, so memory stays at one chunk;
2. at the end the bytes after the last whole chunk are sealed into a tail
   object, then the row's offset moves by compare-and-set. Objects written past
   the committed offset are garbage that the next PATCH overwrites, so a crash
   or a bad checksum at any point leaves the committed offset true.

The SHA-256 state of an unfinished upload lives in this process only; after a
restart (or on another process) it is rebuilt by reading the committed chunks
back, which also re-checks them.

Nothing is downloadable before ``available``: the download route only serves
available rows.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache
from msgspec.structs import replace

from syncproto import errors
from syncserver.attachments import chunks, metrics
from syncserver.attachments.blobstore import BlobNotFound, BlobStore
from syncserver.attachments.chunks import ChunkError, SealedBlob
from syncserver.attachments.settings import AttachmentSettings
from syncserver.auth.tokens import Principal
from syncserver.errors import ApiError
from syncserver.keys.keyring import Ciphers, TenantCipher
from syncstore.attachments import AttachmentRecord, AttachmentStore

log = logging.getLogger("syncserver.attachments")

Clock = Callable[[], int]

_STATUS = {
    errors.ATTACHMENT_TOO_LARGE: 413,
    errors.MEDIA_TYPE_NOT_ALLOWED: 415,
    errors.ATTACHMENT_HASH_MISMATCH: 422,
}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Declared:
    """What a device declares when it creates an upload (from the attachment reference)."""

    id: str
    size: int
    sha256: str
    media_type: str


@dataclass
class _Hashing:
    offset: int
    sha256: Any  # hashlib's hash object has no public type


class UploadService:
    def __init__(
        self,
        meta: AttachmentStore,
        blobs: BlobStore,
        ciphers: Ciphers,
        settings: AttachmentSettings,
        clock: Clock = _now_ms,
    ) -> None:
        self.meta = meta
        self.blobs = blobs
        self.ciphers = ciphers
        self.settings = settings
        self.clock = clock
        self._hashing: LRUCache[tuple[str, str], _Hashing] = LRUCache(maxsize=10_000)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    # --- creation -------------------------------------------------------------

    async def create(self, principal: Principal, declared: Declared) -> AttachmentRecord:
        """Create the upload, or return the one this id already names (a retried creation).

        A refusal (too large, media type) is stored as a refused row and raised as ``ApiError``.
        """
        tenant = principal.tenant
        cipher = await self.ciphers.cipher(tenant)
        mac = cipher.mac(cipher.current_version, bytes.fromhex(declared.sha256))
        now = self.clock()
        record = AttachmentRecord(
            tenant_id=tenant,
            id=declared.id,
            user_sub=principal.sub,
            size=declared.size,
            media_type=declared.media_type,
            mac=mac,
            mac_version=cipher.current_version,
            key_version=cipher.current_version,
            state="uploading",
            upload_offset=0,
            chunk_bytes=self.settings.chunk_bytes,
            created_at=now,
            updated_at=now,
            expires_at=now + self.settings.upload_expiry_s * 1000,
        )
        refusal = self._admission(declared)
        if refusal is not None:
            record = replace(record, state="refused", code=refusal[0], message=refusal[1])
        stored = await self.meta.create_attachment(record)
        same = (stored.user_sub, stored.size, stored.media_type) == (principal.sub, declared.size, declared.media_type)
        if not same or cipher.mac(stored.mac_version, bytes.fromhex(declared.sha256)) != stored.mac:
            raise ApiError(409, errors.ATTACHMENT_CONFLICT, f"attachment {declared.id} exists with other content")
        if stored == record and refusal is not None:  # refused now, not a retry of an earlier refusal
            metrics.UPLOADS_FAILED.labels(refusal[0]).inc()
            log.info("attachment upload refused", extra={"attachment": declared.id, "code": refusal[0]})
        self._raise_if_refused(stored)
        if stored.state == "uploading" and stored.expires_at < now:
            # Expired and not yet collected: creating it again starts it over.
            restarted = replace(stored, upload_offset=0, updated_at=now, expires_at=record.expires_at)
            if await self.meta.update_attachment(stored, restarted):
                self._hashing.pop((tenant, stored.id), None)
                await self.blobs.delete(await self.blobs.list(chunks.prefix(tenant, stored.id)))
                stored = restarted
        if stored.state == "uploading" and stored.size == 0:
            stored = await self._finish_empty(stored, cipher)
        return stored

    def _admission(self, declared: Declared) -> tuple[str, str] | None:
        if declared.size > self.settings.max_bytes:
            limit = self.settings.max_bytes
            return errors.ATTACHMENT_TOO_LARGE, f"the attachment is {declared.size} bytes; the limit is {limit}"
        if not self.settings.allows(declared.media_type):
            return errors.MEDIA_TYPE_NOT_ALLOWED, f"media type {declared.media_type} is not allowed"
        return None

    @staticmethod
    def _raise_if_refused(row: AttachmentRecord) -> None:
        if row.state == "refused" and row.code is not None:
            raise ApiError(_STATUS.get(row.code, 410), row.code, row.message or "the upload was refused")

    # --- reading state ----------------------------------------------------------

    async def get(self, principal: Principal, attachment_id: str) -> AttachmentRecord:
        """The caller's upload (same tenant and user), else ``not_found``."""
        row = await self.meta.get_attachment(principal.tenant, attachment_id)
        if row is None or row.user_sub != principal.sub:
            raise ApiError(404, errors.NOT_FOUND, f"no upload {attachment_id}")
        if row.state == "uploading" and row.expires_at < self.clock():
            raise ApiError(410, errors.UPLOAD_EXPIRED, f"upload {attachment_id} expired; create it again")
        return row

    # --- receiving --------------------------------------------------------------

    async def receive(
        self,
        principal: Principal,
        attachment_id: str,
        offset: int,
        body: AsyncIterator[bytes],
        checksum: tuple[str, bytes] | None = None,
    ) -> AttachmentRecord:
        """Append one PATCH body at ``offset``; returns the row after it (``available`` once complete)."""
        key = (principal.tenant, attachment_id)
        lock = self._locks.setdefault(key, asyncio.Lock())
        if lock.locked():
            raise ApiError(409, errors.OFFSET_MISMATCH, "another request is writing this upload; HEAD and resume")
        async with lock:
            try:
                return await self._receive(principal, attachment_id, offset, body, checksum)
            finally:
                # Nobody waits on this lock (a second writer is refused above), so it can go.
                self._locks.pop(key, None)

    async def _receive(
        self,
        principal: Principal,
        attachment_id: str,
        offset: int,
        body: AsyncIterator[bytes],
        checksum: tuple[str, bytes] | None,
    ) -> AttachmentRecord:
        row = await self.get(principal, attachment_id)
        self._raise_if_refused(row)
        if row.state != "uploading":
            raise ApiError(409, errors.OFFSET_MISMATCH, f"the upload is complete ({row.upload_offset} bytes)")
        if offset != row.upload_offset:
            raise ApiError(409, errors.OFFSET_MISMATCH, f"the upload is at offset {row.upload_offset}, not {offset}")
        cipher = await self.ciphers.cipher(row.tenant_id, [row.key_version])
        hashing = await self._hashing_at(row, cipher)
        writer = _ChunkWriter(self.blobs, cipher, row, await self._tail(row, cipher))
        check = hashlib.new(checksum[0]) if checksum is not None else None
        received = 0
        complete = True
        metrics.UPLOADS_IN_PROGRESS.inc()
        try:
            async for piece in body:
                if offset + received + len(piece) > row.size:
                    raise ApiError(413, errors.BODY_TOO_LARGE, "the body goes past the declared Upload-Length")
                received += len(piece)
                hashing.sha256.update(piece)
                if check is not None:
                    check.update(piece)
                await writer.write(piece)
        except ClientGone:
            complete = False
        finally:
            metrics.UPLOADS_IN_PROGRESS.dec()
        key = (row.tenant_id, row.id)
        if check is not None and checksum is not None and (not complete or check.digest() != checksum[1]):
            self._hashing.pop(key, None)  # it has seen bytes that are not committed
            if not complete:
                raise ClientGone
            raise ApiError(460, errors.CHECKSUM_MISMATCH, "the body does not match Upload-Checksum; resend it")
        new_offset = offset + received
        await writer.flush(final=new_offset == row.size)
        advanced = replace(row, upload_offset=new_offset, updated_at=self.clock())
        advanced = replace(advanced, expires_at=advanced.updated_at + self.settings.upload_expiry_s * 1000)
        if not await self.meta.update_attachment(row, advanced):
            self._hashing.pop(key, None)
            raise ApiError(409, errors.OFFSET_MISMATCH, "the upload moved meanwhile; HEAD and resume")
        if offset % row.chunk_bytes:
            await self.blobs.delete([chunks.tail_key(row.tenant_id, row.id, row.key_version, offset)])
        self._hashing[key] = _Hashing(new_offset, hashing.sha256)
        if new_offset == row.size:
            return await self._finish(advanced, cipher, hashing.sha256.digest())
        return advanced

    async def _tail(self, row: AttachmentRecord, cipher: TenantCipher) -> bytes:
        if row.upload_offset % row.chunk_bytes == 0:
            return b""
        key = chunks.tail_key(row.tenant_id, row.id, row.key_version, row.upload_offset)
        try:
            blob = await self.blobs.get(key)
        except BlobNotFound as exc:
            raise _integrity(row.id) from exc
        try:
            return chunks.open_tail(cipher, row.id, row.upload_offset, blob, row.key_version)
        except ChunkError as exc:
            raise _integrity(row.id) from exc

    async def _hashing_at(self, row: AttachmentRecord, cipher: TenantCipher) -> _Hashing:
        cached = self._hashing.get((row.tenant_id, row.id))
        if cached is not None and cached.offset == row.upload_offset:
            return _Hashing(cached.offset, cached.sha256.copy())
        # Another process (or a previous life of this one) received the committed bytes: hash them again.
        sha = hashlib.sha256()
        whole = row.upload_offset // row.chunk_bytes
        sealed = SealedBlob(self.blobs, cipher, row.tenant_id, row.id, row.key_version, row.size, row.chunk_bytes)
        try:
            for index in range(whole):
                sha.update(await sealed.read_chunk(index))
        except ChunkError as exc:
            raise _integrity(row.id) from exc
        sha.update(await self._tail(row, cipher))
        return _Hashing(row.upload_offset, sha)

    # --- completion ---------------------------------------------------------------

    async def _finish_empty(self, row: AttachmentRecord, cipher: TenantCipher) -> AttachmentRecord:
        writer = _ChunkWriter(self.blobs, cipher, row, b"")
        await writer.flush(final=True)
        return await self._finish(row, cipher, hashlib.sha256().digest())

    async def _finish(self, row: AttachmentRecord, cipher: TenantCipher, digest: bytes) -> AttachmentRecord:
        self._hashing.pop((row.tenant_id, row.id), None)
        now = self.clock()
        if cipher.mac(row.mac_version, digest) != row.mac:
            await self.blobs.delete(await self.blobs.list(chunks.prefix(row.tenant_id, row.id)))
            refused = replace(
                row,
                state="refused",
                code=errors.ATTACHMENT_HASH_MISMATCH,
                message="the uploaded bytes do not match the declared SHA-256",
                updated_at=now,
            )
            await self.meta.update_attachment(row, refused)
            metrics.UPLOADS_FAILED.labels(errors.ATTACHMENT_HASH_MISMATCH).inc()
            log.info("attachment upload refused", extra={"attachment": row.id, "code": errors.ATTACHMENT_HASH_MISMATCH})
            self._raise_if_refused(refused)
        same = await self.meta.find_blob(row.tenant_id, row.mac)
        if same is not None and same.id != row.id:
            # Equal content is stored once per tenant: use the existing objects, drop ours.
            done = replace(
                row,
                state="available",
                blob_owner=same.id,
                key_version=same.key_version,
                chunk_bytes=same.chunk_bytes,
                updated_at=now,
            )
            if await self.meta.update_attachment(row, done):
                await self.blobs.delete(await self.blobs.list(chunks.prefix(row.tenant_id, row.id)))
                return done
        done = replace(row, state="available", blob_owner=row.id, updated_at=now)
        if not await self.meta.update_attachment(row, done):
            raise ApiError(409, errors.OFFSET_MISMATCH, "the upload moved meanwhile; HEAD and resume")
        metrics.BYTES_STORED.inc(row.size)
        return done

    # --- termination and dead letters -----------------------------------------

    async def terminate(self, principal: Principal, attachment_id: str) -> None:
        """tus termination: forget an unfinished or refused upload and its bytes."""
        row = await self.meta.get_attachment(principal.tenant, attachment_id)
        if row is None or row.user_sub != principal.sub:
            raise ApiError(404, errors.NOT_FOUND, f"no upload {attachment_id}")
        if row.state == "available":
            raise ApiError(409, errors.INVALID_REQUEST, "a finished upload is an attachment; it cannot be terminated")
        await self.discard(row)

    async def discard(self, row: AttachmentRecord) -> None:
        """Delete the row, then the objects holding its bytes once no other row uses them (dedup)."""
        self._hashing.pop((row.tenant_id, row.id), None)
        await self.meta.delete_attachment(row.tenant_id, row.id)
        # Its own objects (a deduplicated row's may be left over from a crash), and the ones it used.
        for owner in {row.id, row.blob_owner or row.id}:
            if not await self.meta.blob_users(row.tenant_id, owner):
                await self.blobs.delete(await self.blobs.list(chunks.prefix(row.tenant_id, owner)))

    async def replay(self, tenant: str, attachment_id: str) -> AttachmentRecord:
        """Re-admit a refused upload: drop its bytes and let the device upload it again from offset 0.

        Admission (size, media type) is checked again under the current settings; if it still
        fails the row stays refused with the current reason.
        """
        row = await self.meta.get_attachment(tenant, attachment_id)
        if row is None or row.state != "refused":
            raise ApiError(404, errors.NOT_FOUND, f"no refused upload {attachment_id}")
        await self.blobs.delete(await self.blobs.list(chunks.prefix(tenant, attachment_id)))
        now = self.clock()
        declared = Declared(row.id, row.size, "0" * 64, row.media_type)
        refusal = self._admission(declared)
        if refusal is not None:
            again = replace(row, code=refusal[0], message=refusal[1], updated_at=now)
        else:
            expires = now + self.settings.upload_expiry_s * 1000
            again = replace(
                row, state="uploading", upload_offset=0, code=None, message=None, updated_at=now, expires_at=expires
            )
        if not await self.meta.update_attachment(row, again):
            raise ApiError(409, errors.INVALID_REQUEST, "the upload changed meanwhile; try again")
        return again


class ClientGone(Exception):
    """The client disconnected in the middle of a PATCH body."""


def _integrity(attachment_id: str) -> ApiError:
    metrics.INTEGRITY_FAILURES.inc()
    log.error("stored attachment chunk failed its integrity check", extra={"attachment": attachment_id})
    return ApiError(500, errors.DATA_INTEGRITY, "stored attachment data failed its integrity check")


class _ChunkWriter:
    """Buffers at most one chunk of plaintext and seals whole chunks as they fill."""

    def __init__(self, blobs: BlobStore, cipher: TenantCipher, row: AttachmentRecord, tail: bytes) -> None:
        self.blobs = blobs
        self.cipher = cipher
        self.row = row
        self.size = row.chunk_bytes
        self.count = chunks.chunk_count(row.size, row.chunk_bytes)
        self.index = row.upload_offset // row.chunk_bytes
        self.buffer = bytearray(tail)

    async def write(self, piece: bytes) -> None:
        self.buffer += piece
        while len(self.buffer) >= self.size and self.index < self.count:
            await self._seal(bytes(self.buffer[: self.size]))
            del self.buffer[: self.size]

    async def flush(self, *, final: bool) -> None:
        """Seal what is buffered: as the last chunk when the upload is complete, else as the tail."""
        row = self.row
        if final:
            if self.buffer or self.index < self.count:
                await self._seal(bytes(self.buffer))
            self.buffer.clear()
        elif self.buffer:
            offset = self.index * self.size + len(self.buffer)
            sealed = chunks.seal_tail(self.cipher, row.id, offset, bytes(self.buffer), row.key_version)
            await self.blobs.put(chunks.tail_key(row.tenant_id, row.id, row.key_version, offset), sealed)

    async def _seal(self, data: bytes) -> None:
        row = self.row
        last = self.index == self.count - 1
        sealed = chunks.seal_chunk(self.cipher, row.id, self.index, last, data, row.key_version)
        await self.blobs.put(chunks.chunk_key(row.tenant_id, row.id, row.key_version, self.index), sealed)
        self.index += 1
