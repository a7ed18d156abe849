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

Equal content is stored once per tenant: a completed upload whose content equals
an available attachment's gets ``blob_owner`` = that attachment and reads the
objects under its prefix (``<tenant>/<owner>/``), which may outlive the owner's
own row (GC collects an unreferenced owner while the others still read them). So:

* every delete of a prefix goes through ``_drop_objects``, which deletes nothing
  while another row uses the prefix;
* an id whose prefix other rows read cannot name a new upload (it would write
  into their objects): creating it is ``attachment_conflict``, and so is a first
  PATCH of such a row, or replaying it. Ids are device-chosen UUIDs: reusing one
  is a client bug;
* a dedup reads the owner's objects and compares their SHA-256 with the new
  upload's before it points at them (``_holds``): a row's record of its content
  is not proof that its objects hold it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
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
from syncserver.keys.envelope import BytesLike
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
    """The SHA-256 of an upload's committed bytes, as of the row that committed them."""

    offset: int
    sha256: Any  # hashlib's hash object has no public type
    tokens: str | None = None
    created_at: int = 0
    """With the offset, which row's bytes these are: another process may have restarted or re-created the upload
    and committed other bytes up to the same offset (its objects then have other tokens)."""


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

        A refusal (too large, media type) is stored as a refused row and raised as ``ApiError``. An id whose
        objects other rows still read (deduplicated onto it; its own row collected) is ``attachment_conflict``.
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
            # A token that names nothing yet: a row created again under this id (terminated, then created in the
            # same millisecond) is told apart from the old one by it, as a restart is (see below).
            chunk_tokens=chunks.with_segment(None, 0, chunks.new_token()),
            created_at=now,
            updated_at=now,
            expires_at=now + self.settings.upload_expiry_s * 1000,
        )
        refusal = self._admission(declared)
        if refusal is not None:
            record = replace(record, state="refused", code=refusal[0], message=refusal[1])
        stored = await self.meta.create_attachment(record)
        if stored.blob_owner is None and await self.meta.blob_users(tenant, stored.id):
            # Its id names objects other attachments read (they were deduplicated onto an earlier upload of
            # this id, whose row has been collected since): refused, before any byte is written there.
            if stored == record:
                await self.meta.delete_attachment(tenant, stored.id)
            raise ApiError(409, errors.ATTACHMENT_CONFLICT, _REUSED.format(declared.id))
        same = (stored.user_sub, stored.size, stored.media_type) == (principal.sub, declared.size, declared.media_type)
        if same and not cipher.has([stored.mac_version]):
            cipher = await self.ciphers.cipher(tenant, [stored.mac_version])
        # A row whose keyed hash is under a destroyed key version cannot show it holds this content: a conflict.
        if (
            not same
            or not cipher.has([stored.mac_version])
            or cipher.mac(stored.mac_version, bytes.fromhex(declared.sha256)) != stored.mac
        ):
            raise ApiError(409, errors.ATTACHMENT_CONFLICT, f"attachment {declared.id} exists with other content")
        if stored == record and refusal is not None:  # refused now, not a retry of an earlier refusal
            metrics.UPLOADS_FAILED.labels(refusal[0]).inc()
            log.info("attachment upload refused", extra={"attachment": declared.id, "code": refusal[0]})
        self._raise_if_refused(stored)
        if stored.state == "uploading" and stored.expires_at < now:
            # Expired and not yet collected: creating it again starts it over.
            # A fresh token that names nothing: a PATCH still in flight from before, whose objects go with the
            # old ones below, can no longer move this row (its compare-and-set would otherwise still match). The
            # objects to drop are listed first: a PATCH of the restarted upload may commit new ones meanwhile.
            listed = await self.blobs.list(chunks.prefix(tenant, stored.id))
            restarted = replace(
                stored,
                upload_offset=0,
                chunk_tokens=chunks.with_segment(None, 0, chunks.new_token()),
                updated_at=now,
                expires_at=record.expires_at,
            )
            if await self.meta.update_attachment(stored, restarted):
                self._hashing.pop((tenant, stored.id), None)
                await self._drop_objects(tenant, stored.id, own_row=True, listed=listed)
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
        if offset == 0 and await self.meta.blob_users(row.tenant_id, row.id):
            # A row that slipped past ``create``'s check (created while the old owner's row was being
            # collected): its first PATCH would overwrite objects other rows read.
            raise ApiError(409, errors.ATTACHMENT_CONFLICT, _REUSED.format(row.id))
        cipher = await self.ciphers.cipher(row.tenant_id, [row.key_version])
        hashing = await self._hashing_at(row, cipher)
        writer = _ChunkWriter(self.blobs, cipher, row, await self._tail(row, cipher), chunks.new_token())
        try:
            return await self._append(row, offset, body, checksum, hashing, writer)
        except BaseException:
            if not writer.claimed:
                await writer.discard()  # no row names them, and none ever will: its token was never recorded
            raise
        finally:
            await writer.abandon()

    async def _append(
        self,
        row: AttachmentRecord,
        offset: int,
        body: AsyncIterator[bytes],
        checksum: tuple[str, bytes] | None,
        hashing: _Hashing,
        writer: _ChunkWriter,
    ) -> AttachmentRecord:
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
        # The objects this PATCH wrote are named by its token, recorded by the same compare-and-set as the offset:
        # a PATCH racing this one on another process wrote objects of its own, which no row names.
        tokens = chunks.with_segment(row.chunk_tokens, offset // row.chunk_bytes, writer.token)
        advanced = replace(row, upload_offset=new_offset, chunk_tokens=tokens, updated_at=self.clock())
        advanced = replace(advanced, expires_at=advanced.updated_at + self.settings.upload_expiry_s * 1000)
        # Durable before the offset says so: a 204 means the bytes survive a power cut (one sync per PATCH).
        if new_offset == row.size:
            # The last PATCH moves the row from its offset straight to complete: one write, not two. The
            # dedup lookup reads while the disk syncs.
            same, _ = await asyncio.gather(self.meta.find_blob(row.tenant_id, row.mac), self._sync(row, writer))
            return await self._finish(row, advanced, writer, hashing.sha256.digest(), same)
        await self._sync(row, writer)
        if not await self._claim(row, advanced, writer):
            self._hashing.pop(key, None)
            raise ApiError(409, errors.OFFSET_MISMATCH, "the upload moved meanwhile; HEAD and resume")
        await self._drop_tail(row)
        self._hashing[key] = _Hashing(new_offset, hashing.sha256, advanced.chunk_tokens, advanced.created_at)
        return advanced

    async def _sync(self, row: AttachmentRecord, writer: _ChunkWriter) -> None:
        """Make the PATCH's objects durable; one gone already means the upload moved on (see ``_moved``)."""
        try:
            await self.blobs.sync(writer.written)
        except BlobNotFound:
            raise await self._moved(row) from None

    async def _claim(self, old: AttachmentRecord, new: AttachmentRecord, writer: _ChunkWriter) -> bool:
        """``update_attachment(old, new)`` where ``new`` names ``writer``'s objects: from the moment it is sent
        they may be named (``writer.claimed``), until it answers that it did not apply."""
        writer.claimed = True
        if await self.meta.update_attachment(old, new):
            return True
        writer.claimed = False
        return False

    async def _moved(self, row: AttachmentRecord) -> ApiError:
        """The answer to a PATCH that found objects of ``row`` missing: the upload moved on meanwhile (another
        process completed, restarted or terminated it, and its objects went) is a 409 like any lost race; an
        upload still as ``row`` says has lost stored data."""
        now = await self.meta.get_attachment(row.tenant_id, row.id)
        if now is None or _position(now) != _position(row):
            return ApiError(409, errors.OFFSET_MISMATCH, "the upload moved meanwhile; HEAD and resume")
        return _integrity(row.id)

    async def _drop_tail(self, row: AttachmentRecord) -> None:
        """Delete the tail the PATCH from ``row``'s offset started from (now sealed into chunks or a new tail)."""
        if row.upload_offset % row.chunk_bytes:
            token = chunks.last_token(row.chunk_tokens)
            await self.blobs.delete([chunks.tail_key(row.tenant_id, row.id, row.key_version, row.upload_offset, token)])

    async def _tail(self, row: AttachmentRecord, cipher: TenantCipher) -> bytes:
        if row.upload_offset % row.chunk_bytes == 0:
            return b""
        token = chunks.last_token(row.chunk_tokens)
        key = chunks.tail_key(row.tenant_id, row.id, row.key_version, row.upload_offset, token)
        try:
            blob = await self.blobs.get(key)
        except BlobNotFound:
            raise await self._moved(row) from None  # committed past it by another process, which dropped it
        try:
            return chunks.open_tail(cipher, row.id, row.upload_offset, blob, row.key_version, token)
        except ChunkError as exc:
            raise _integrity(row.id) from exc

    async def _hashing_at(self, row: AttachmentRecord, cipher: TenantCipher) -> _Hashing:
        cached = self._hashing.get((row.tenant_id, row.id))
        if cached is not None and (cached.offset, cached.tokens, cached.created_at) == (
            row.upload_offset,
            row.chunk_tokens,
            row.created_at,
        ):
            return _Hashing(cached.offset, cached.sha256.copy())
        # Another process (or a previous life of this one) received the committed bytes: hash them again.
        sha = hashlib.sha256()
        whole = row.upload_offset // row.chunk_bytes
        sealed = SealedBlob.of(self.blobs, cipher, row)
        try:
            for index in range(whole):
                sha.update(await sealed.read_chunk(index))
        except ChunkError:
            raise await self._moved(row) from None
        sha.update(await self._tail(row, cipher))
        return _Hashing(row.upload_offset, sha)

    # --- completion ---------------------------------------------------------------

    async def _finish_empty(self, row: AttachmentRecord, cipher: TenantCipher) -> AttachmentRecord:
        """Complete an empty file at its creation. Two processes creating it at once (a retried POST) both try;
        the one that loses deletes its object and answers with the row the other completed, as a retry does."""
        writer = _ChunkWriter(self.blobs, cipher, row, b"", chunks.new_token())
        try:
            await writer.flush(final=True)
            await self._sync(row, writer)
            same = await self.meta.find_blob(row.tenant_id, row.mac)
            written = replace(row, chunk_tokens=chunks.with_segment(row.chunk_tokens, 0, writer.token))
            return await self._finish(row, written, writer, hashlib.sha256().digest(), same)
        except ApiError as exc:
            if writer.claimed or exc.code != errors.OFFSET_MISMATCH:
                raise
            await writer.discard()
            now = await self.meta.get_attachment(row.tenant_id, row.id)
            if now is None or now.state == "uploading":
                raise
            self._raise_if_refused(now)
            return now
        except BaseException:
            if not writer.claimed:
                await writer.discard()
            raise

    async def _finish(
        self,
        row: AttachmentRecord,
        received: AttachmentRecord,
        writer: _ChunkWriter,
        digest: bytes,
        same: AttachmentRecord | None,
    ) -> AttachmentRecord:
        """Complete (or refuse) the upload whose bytes are all stored and synced.

        ``row`` is the row as stored, ``received`` the same at full size, ``same`` an available blob with
        the declared content (``find_blob``). One compare-and-set from ``row``: a crash before it leaves
        the upload where ``row`` says, and the device's retried PATCH writes the same objects again.
        """
        self._hashing.pop((row.tenant_id, row.id), None)
        now = self.clock()
        if writer.cipher.mac(row.mac_version, digest) != row.mac:
            refused = replace(
                received,
                state="refused",
                code=errors.ATTACHMENT_HASH_MISMATCH,
                message="the uploaded bytes do not match the declared SHA-256",
                updated_at=now,
            )
            if await self._claim(row, refused, writer):
                await self._drop_objects(row.tenant_id, row.id, own_row=True)
                metrics.UPLOADS_FAILED.labels(errors.ATTACHMENT_HASH_MISMATCH).inc()
                log.info(
                    "attachment upload refused", extra={"attachment": row.id, "code": errors.ATTACHMENT_HASH_MISMATCH}
                )
                self._raise_if_refused(refused)
            raise ApiError(409, errors.OFFSET_MISMATCH, "the upload moved meanwhile; HEAD and resume")
        stored = row
        if same is not None and same.id != row.id and await self._holds(same, digest):
            # Equal content is stored once per tenant: use the existing objects, drop ours.
            shared = replace(
                received,
                state="available",
                blob_owner=same.id,
                key_version=same.key_version,
                chunk_bytes=same.chunk_bytes,
                chunk_tokens=same.chunk_tokens,
                updated_at=now,
            )
            if await self.meta.update_attachment(row, shared):
                # GC (the owner's row deleted, then its objects unless a row uses them) or a re-encryption (the
                # rows moved, then the old version's objects gone) may have passed between ``find_blob`` and
                # this write, not counting us: only an owner still as found vouches for its objects.
                if _same_blob(await self.meta.get_attachment(row.tenant_id, same.id), same):
                    await self._drop_objects(row.tenant_id, row.id, own_row=True)
                    return shared
                stored = shared  # keep our own objects after all
        done = replace(received, state="available", blob_owner=row.id, updated_at=now)
        if not await self._claim(stored, done, writer):
            raise ApiError(409, errors.OFFSET_MISMATCH, "the upload moved meanwhile; HEAD and resume")
        await self._sweep(done)
        metrics.BYTES_STORED.inc(row.size)
        return done

    async def _sweep(self, done: AttachmentRecord) -> None:
        """Delete the objects of a completed upload that its row does not name: the tail the last PATCH started
        from, and what PATCHes that lost a race or were cut off (a dropped connection, a crash) left behind.

        Only under its own key version: a re-encryption may already be writing the next one's objects."""
        version = f"{chunks.prefix(done.tenant_id, done.id)}v{done.key_version}/"
        named = chunks.blob_keys(
            done.tenant_id, done.id, done.key_version, done.size, done.chunk_bytes, done.chunk_tokens
        )
        await self.blobs.delete([key for key in await self.blobs.list(version) if key not in named])

    async def _holds(self, owner: AttachmentRecord, digest: bytes) -> bool:
        """Whether ``owner``'s stored objects hold the content ``digest`` names: read, opened and hashed.

        Dedup trusts no row's record of its content alone. Two PATCHes of one upload racing on two server
        processes (one process refuses the second) can leave objects that differ from what the winner hashed,
        and an upload deduplicated onto them would serve those bytes in place of its own, verified ones. So a
        dedup reads the owner's bytes once (only on a hit: equal content is rare for photos), and keeps its own
        objects if they differ, reporting the owner as damaged.
        """
        cipher = await self.ciphers.cipher(owner.tenant_id, [owner.key_version])
        sealed = SealedBlob.of(self.blobs, cipher, owner)
        content = hashlib.sha256()
        try:
            async for piece in sealed.read():
                content.update(piece)
        except ChunkError:
            pass  # damaged: not the content either
        else:
            if content.digest() == digest:
                return True
        metrics.INTEGRITY_FAILURES.inc()
        log.error("a stored attachment does not hold its recorded content", extra={"attachment": owner.id})
        return False

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
        # Its own objects (a deduplicated row's may be left over from a crash), and the ones it used: listed
        # before the row goes, so that an upload created again under its id right after keeps what it writes.
        owners = sorted({row.id, row.blob_owner or row.id})
        listed = {owner: await self.blobs.list(chunks.prefix(row.tenant_id, owner)) for owner in owners}
        await self.meta.delete_attachment(row.tenant_id, row.id)
        for owner in owners:
            await self._drop_objects(row.tenant_id, owner, listed=listed[owner])

    async def _drop_objects(
        self, tenant: str, owner: str, *, own_row: bool = False, listed: Sequence[str] | None = None
    ) -> None:
        """Delete the objects under ``owner``'s prefix, unless a row other than the caller's uses them.

        Every prefix delete goes through here. A row reads the prefix of its ``blob_owner`` (a deduplicated
        row another's, possibly after that one's own row is gone), and writes its own id's prefix while it
        has no owner yet (uploading). ``own_row``: the caller's row named ``owner`` is stored and gives its
        objects up (restarted, refused, replayed or deduplicated; none of these owns them through
        ``blob_owner``); without it the caller's row is deleted, and a row named ``owner`` that is stored
        (created again meanwhile) keeps them. ``listed``: only these of its objects (listed before the caller's
        row changed), not whatever the prefix holds by now.
        """
        if await self.meta.blob_users(tenant, owner):
            return
        if not own_row and await self.meta.get_attachment(tenant, owner) is not None:
            return
        await self.blobs.delete(await self.blobs.list(chunks.prefix(tenant, owner)) if listed is None else listed)

    async def replay(self, tenant: str, attachment_id: str) -> AttachmentRecord:
        """Re-admit a refused upload: drop its bytes and let the device upload it again from offset 0.

        Admission (size, media type) is checked again under the current settings; if it still
        fails the row stays refused with the current reason. A row whose id names objects other rows
        read is not re-admitted (``attachment_conflict``): its upload would write into them.
        """
        row = await self.meta.get_attachment(tenant, attachment_id)
        if row is None or row.state != "refused":
            raise ApiError(404, errors.NOT_FOUND, f"no refused upload {attachment_id}")
        if await self.meta.blob_users(tenant, attachment_id):
            raise ApiError(409, errors.ATTACHMENT_CONFLICT, _REUSED.format(attachment_id))
        needed = [row.key_version, row.mac_version]
        if not (await self.ciphers.cipher(tenant, needed)).has(needed):
            # Its upload would seal under, and check its declared content against, a destroyed key version.
            raise ApiError(
                409,
                errors.INVALID_REQUEST,
                f"upload {attachment_id} was recorded under a key version destroyed since; upload it under a new id",
            )
        await self._drop_objects(tenant, attachment_id, own_row=True)
        now = self.clock()
        declared = Declared(row.id, row.size, "0" * 64, row.media_type)
        refusal = self._admission(declared)
        if refusal is not None:
            again = replace(row, code=refusal[0], message=refusal[1], updated_at=now)
        else:
            expires = now + self.settings.upload_expiry_s * 1000
            again = replace(
                row,
                state="uploading",
                upload_offset=0,
                chunk_tokens=chunks.with_segment(None, 0, chunks.new_token()),  # as a restart does: see ``create``
                code=None,
                message=None,
                updated_at=now,
                expires_at=expires,
            )
        if not await self.meta.update_attachment(row, again):
            raise ApiError(409, errors.INVALID_REQUEST, "the upload changed meanwhile; try again")
        return again


_REUSED = "attachment id {} names the stored bytes of other attachments; upload under a new id"


def _position(row: AttachmentRecord) -> tuple[object, ...]:
    """What the compare-and-set compares (``AttachmentStore.update_attachment``): where the upload is."""
    return row.state, row.upload_offset, row.key_version, row.chunk_tokens, row.created_at


def _same_blob(found: AttachmentRecord | None, same: AttachmentRecord) -> bool:
    """``found`` (the owner's row read again) still owns the objects ``same`` (as ``find_blob`` saw it) named."""
    if found is None or found.state != "available" or found.blob_owner != found.id:
        return False
    return (found.key_version, found.chunk_bytes, found.chunk_tokens, found.mac) == (
        same.key_version,
        same.chunk_bytes,
        same.chunk_tokens,
        same.mac,
    )


class ClientGone(Exception):
    """The client disconnected in the middle of a PATCH body."""


def _integrity(attachment_id: str) -> ApiError:
    metrics.INTEGRITY_FAILURES.inc()
    log.error("stored attachment chunk failed its integrity check", extra={"attachment": attachment_id})
    return ApiError(500, errors.DATA_INTEGRITY, "stored attachment data failed its integrity check")


class _ChunkWriter:
    """Buffers at most one chunk of plaintext and seals whole chunks as they fill; remembers what it wrote.

    The buffer is allocated once per PATCH, at most a chunk (less for a small file), and filled in
    place: growing a ``bytearray`` piece by piece copies the chunk again at every reallocation.
    """

    def __init__(self, blobs: BlobStore, cipher: TenantCipher, row: AttachmentRecord, tail: bytes, token: str) -> None:
        self.blobs = blobs
        self.cipher = cipher
        self.row = row
        self.token = token
        """This PATCH's own: in the name and associated data of every object it writes."""
        self.size = row.chunk_bytes
        self.count = chunks.chunk_count(row.size, row.chunk_bytes)
        self.index = row.upload_offset // row.chunk_bytes
        self.buffer = bytearray(max(len(tail), min(self.size, row.size - self.index * self.size)))
        self.buffer[: len(tail)] = tail
        self.filled = len(tail)
        self.written: list[str] = []
        """Keys of the objects put so far, for one ``BlobStore.sync`` before the offset moves."""
        self.claimed = False
        """A compare-and-set naming these objects was sent and did not answer no (``UploadService._claim``)."""
        self._putting: asyncio.Task[None] | None = None

    @property
    def buffered(self) -> memoryview:
        return memoryview(self.buffer)[: self.filled]

    async def write(self, piece: bytes) -> None:
        view = memoryview(piece)
        while view:
            if not self.filled and len(view) >= self.size and self.index < self.count:
                await self._seal(view[: self.size])  # a whole chunk straight from the body, not copied
                view = view[self.size :]
                continue
            take = len(view) if self.index >= self.count else min(len(view), self.size - self.filled)
            # Past the last chunk only if the size check upstream failed; the slice then grows the buffer.
            self.buffer[self.filled : self.filled + take] = view[:take]
            self.filled += take
            view = view[take:]
            if self.filled == self.size and self.index < self.count:
                await self._seal(self.buffered)  # sealed into a buffer of its own: this one is free again
                self.filled = 0

    async def flush(self, *, final: bool) -> None:
        """Seal what is buffered: as the last chunk when the upload is complete, else as the tail."""
        row = self.row
        if final:
            if self.filled or self.index < self.count:
                await self._seal(self.buffered)
            self.filled = 0
        elif self.filled:
            offset = self.index * self.size + self.filled
            sealed = chunks.seal_tail(self.cipher, row.id, offset, self.buffered, row.key_version, self.token)
            await self._put(chunks.tail_key(row.tenant_id, row.id, row.key_version, offset, self.token), sealed)
        await self._settle()

    async def abandon(self) -> None:
        """Let a put still running after a failed request end (its object lies past the committed offset)."""
        putting, self._putting = self._putting, None
        if putting is not None:
            await asyncio.wait([putting])
            if not putting.cancelled():
                putting.exception()  # the request already failed for its own reason; this one is retrieved

    async def discard(self) -> None:
        """Delete every object this PATCH wrote (a PATCH that failed before any row could name them)."""
        await self.abandon()
        try:
            await self.blobs.delete(self.written)
        except Exception:  # the request already failed for its own reason; a completion sweeps these later
            log.warning("could not delete a failed PATCH's objects", extra={"attachment": self.row.id}, exc_info=True)

    async def _seal(self, data: BytesLike) -> None:
        row = self.row
        last = self.index == self.count - 1
        sealed = chunks.seal_chunk(self.cipher, row.id, self.index, last, data, row.key_version, self.token)
        await self._put(chunks.chunk_key(row.tenant_id, row.id, row.key_version, self.index, self.token), sealed)
        self.index += 1

    async def _put(self, key: str, sealed: bytearray) -> None:
        # One put in flight while the next chunk arrives: memory is two sealed chunks at most.
        await self._settle()
        self._putting = asyncio.ensure_future(self.blobs.put(key, sealed))
        self.written.append(key)

    async def _settle(self) -> None:
        putting, self._putting = self._putting, None
        if putting is not None:
            await putting
