"""Races between two server processes over one attachment store and one blob store: what each side is told, and
what is left stored.

Each process keeps its own request locks and its own SHA-256 state of the uploads it received; neither sees the
other's requests. Whatever the interleaving, an ``available`` attachment reads exactly the bytes it was verified
against, a PATCH that lost gets a 409 ``offset_mismatch`` (not a 500), and the objects nobody names do not stay.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from syncserver.attachments import chunks
from syncserver.attachments.blob_fs import FilesystemBlobStore
from syncserver.attachments.blobstore import BlobStore
from syncserver.attachments.keyops import AttachmentKeys
from syncserver.attachments.uploads import ClientGone, Declared, UploadService
from syncserver.errors import ApiError
from syncserver.keys.keyring import Ciphers, TenantCipher
from syncstore.attachments import AttachmentRecord, AttachmentStore
from tests.property.test_attachment_chunks import WHO, pieces, service, stored_blob
from tests.unit.test_attachment_patch_race import CHUNK, MeetingBlobs, one_piece


class Clock:
    """The processes' shared clock, moved by hand (an upload expires without waiting a day)."""

    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


class TwoVersions:
    """The tenant's keys at versions 1 and 2; ``current`` moves from 1 to 2 on a rotation."""

    def __init__(self) -> None:
        self.keys = {v: AESGCM(AESGCM.generate_key(bit_length=256)) for v in (1, 2)}
        self.macs = {v: os.urandom(32) for v in (1, 2)}
        self.current = 1

    async def cipher(self, tenant: str, need: Iterable[int] = ()) -> TenantCipher:
        return TenantCipher(tenant, self.keys, self.current, self.macs)


def processes(
    blobs: BlobStore | None = None, *, ciphers: Ciphers | None = None, clock: Clock | None = None
) -> tuple[UploadService, UploadService]:
    """Two server processes sharing the attachment rows, the blob store, the keys and the clock."""
    first = service(CHUNK)
    shared = (first.meta, blobs or first.blobs, ciphers or first.ciphers, first.settings)
    time = clock or Clock()
    return UploadService(*shared, time), UploadService(*shared, time)


def declared(attachment_id: str, data: bytes) -> Declared:
    return Declared(attachment_id, len(data), hashlib.sha256(data).hexdigest(), "image/png")


def expire(uploads: UploadService, clock: Clock) -> None:
    clock.now += uploads.settings.upload_expiry_s * 1000 + 1


async def row_of(uploads: UploadService, attachment_id: str) -> AttachmentRecord:
    row = await uploads.meta.get_attachment("acme", attachment_id)
    assert row is not None
    return row


async def stored_keys(uploads: UploadService, owner: str) -> set[str]:
    return set(await uploads.blobs.list(f"acme/{owner}/"))


def named(row: AttachmentRecord) -> set[str]:
    """The objects a complete row names (every chunk, each under the token of the PATCH that wrote it)."""
    return chunks.blob_keys(row.tenant_id, row.id, row.key_version, row.size, row.chunk_bytes, row.chunk_tokens)


def named_so_far(row: AttachmentRecord) -> set[str]:
    """The objects an unfinished upload's row names: its whole chunks, and its tail if it stops inside a chunk."""
    whole = row.upload_offset // row.chunk_bytes
    keys = {
        chunks.chunk_key(row.tenant_id, row.id, row.key_version, i, chunks.token_at(row.chunk_tokens, i))
        for i in range(whole)
    }
    if row.upload_offset % row.chunk_bytes:
        token = chunks.last_token(row.chunk_tokens)
        keys.add(chunks.tail_key(row.tenant_id, row.id, row.key_version, row.upload_offset, token))
    return keys


class Stalled:
    """A PATCH body on a slow link: ``first`` arrives (its whole chunks sealed and put), then nothing until ``go``,
    then ``rest``."""

    def __init__(self, first: bytes, rest: bytes = b"") -> None:
        self.first = first
        self.rest = rest
        self.sent = asyncio.Event()
        self.go = asyncio.Event()

    async def body(self) -> AsyncIterator[bytes]:
        yield self.first
        self.sent.set()
        await self.go.wait()
        if self.rest:
            yield self.rest


class PausedReads:
    """An attachment store whose row reads, once answered, wait until ``go``: the PATCH that read the row goes on
    with one another process changed meanwhile."""

    def __init__(self, inner: AttachmentStore) -> None:
        self.inner = inner
        self.read = asyncio.Event()
        self.go = asyncio.Event()

    async def get_attachment(self, tenant_id: str, attachment_id: str) -> AttachmentRecord | None:
        row = await self.inner.get_attachment(tenant_id, attachment_id)
        self.read.set()
        await self.go.wait()
        return row

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class PausedPut:
    """A blob store whose puts of the keys ``when`` picks (all, by default) wait until ``go``; ``paused`` says one
    is waiting. For a re-encryption: ``when=lambda key: "/v2/" in key``, its first chunk sealed again."""

    def __init__(self, inner: BlobStore, when: Callable[[str], bool] = lambda key: True) -> None:
        self.inner = inner
        self.when = when
        self.paused = asyncio.Event()
        self.go = asyncio.Event()

    async def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        if self.when(key):
            self.paused.set()
            await self.go.wait()
        await self.inner.put(key, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# --- a process's SHA-256 state of an upload another process started over ---------------------------------------


async def last_patch_is_refused(one: UploadService, real: bytes) -> None:
    """Process one sends the rest of ``real`` after its first two chunks: the stored bytes, hashed again, are not
    the declared ones, so the upload is refused and nothing of it stays."""
    with pytest.raises(ApiError) as refused:
        await one.receive(WHO, "a1", 2 * CHUNK, one_piece(real[2 * CHUNK :]))
    assert (refused.value.status, refused.value.code) == (422, "attachment_hash_mismatch")
    row = await row_of(one, "a1")
    assert (row.state, row.code) == ("refused", "attachment_hash_mismatch")
    assert await stored_keys(one, "a1") == set()


async def test_a_resume_after_a_termination_and_creation_elsewhere_is_checked_against_the_stored_bytes() -> None:
    """The client's DELETE and its new POST of the same id land on process two, in the same millisecond as the
    first creation, and other bytes are committed up to the offset process one had received. Process one's
    SHA-256 of its own bytes up to that offset is not the stored bytes' hash: the last PATCH on process one must
    not make the row ``available`` (verified against the declared SHA-256) over objects holding other bytes. It
    hashes the stored bytes again, which do not match: the upload is refused, and its objects go."""
    one, two = processes()
    real = os.urandom(3 * CHUNK + 10)
    other = os.urandom(2 * CHUNK)
    await one.create(WHO, declared("a1", real))
    await one.receive(WHO, "a1", 0, one_piece(real[: 2 * CHUNK]))  # process one holds the SHA-256 of these

    await two.terminate(WHO, "a1")
    await two.create(WHO, declared("a1", real))
    await two.receive(WHO, "a1", 0, one_piece(other))  # up to the same offset, other bytes
    await last_patch_is_refused(one, real)


async def test_a_resume_after_an_expiry_restart_elsewhere_is_checked_against_the_stored_bytes() -> None:
    """The upload expires and its creation, retried on process two, starts it over (same row, same creation
    time, offset 0); other bytes are committed there up to the offset process one had received. Process one's
    SHA-256 state is of its own bytes: its last PATCH must not verify the row against them. It hashes the stored
    bytes again, which do not match the declared SHA-256: refused, objects gone."""
    clock = Clock()
    one, two = processes(clock=clock)
    real = os.urandom(3 * CHUNK + 10)
    other = os.urandom(2 * CHUNK)
    await one.create(WHO, declared("a1", real))
    await one.receive(WHO, "a1", 0, one_piece(real[: 2 * CHUNK]))

    expire(one, clock)
    restarted = await two.create(WHO, declared("a1", real))
    assert (restarted.state, restarted.upload_offset) == ("uploading", 0)
    await two.receive(WHO, "a1", 0, one_piece(other))
    await last_patch_is_refused(one, real)


# --- a PATCH in flight while another process starts the upload over ----------------------------------------------


async def stalled_patch_is_refused(one: UploadService, stalled: Stalled, patch: asyncio.Future[Any]) -> None:
    """The stalled PATCH's body ends: it gets a 409, and the row stays at offset 0 with nothing stored."""
    stalled.go.set()
    with pytest.raises(ApiError) as refused:
        await patch
    assert (refused.value.status, refused.value.code) == (409, "offset_mismatch")
    row = await row_of(one, "a1")
    assert (row.state, row.upload_offset) == ("uploading", 0)
    assert await stored_keys(one, "a1") == set()


async def uploaded_again(one: UploadService, data: bytes) -> None:
    """The client uploads ``data`` from offset 0: it completes, reads back, and only its named objects stay."""
    done = await one.receive(WHO, "a1", 0, one_piece(data))
    assert done.state == "available"
    assert await (await stored_blob(one, "a1")).read_all() == data
    assert await stored_keys(one, "a1") == named(done)


async def test_a_patch_in_flight_across_an_expiry_restart_gets_409_and_the_upload_starts_over() -> None:
    """A PATCH on process one has sealed and put every chunk, then its connection stalls past the upload's expiry;
    the client creates the upload again on process two, which starts it over and deletes every object of it
    (the stalled PATCH's too). When the stalled body ends, the PATCH must not complete the row onto the deleted
    objects: it gets a 409, the row stays at offset 0 with nothing stored, and the client's resumed upload
    completes."""
    clock = Clock()
    one, two = processes(clock=clock)
    data = os.urandom(2 * CHUNK)
    await one.create(WHO, declared("a1", data))
    stalled = Stalled(data)
    patch = asyncio.ensure_future(one.receive(WHO, "a1", 0, stalled.body()))
    await stalled.sent.wait()

    expire(one, clock)
    await two.create(WHO, declared("a1", data))  # started over: its objects deleted
    await stalled_patch_is_refused(one, stalled, patch)

    await uploaded_again(one, data)  # the client's HEAD says 0: it sends it all again


async def test_a_patch_in_flight_across_a_replay_gets_409_and_the_upload_starts_over() -> None:
    """A PATCH on process one has put every chunk and stalls; a PATCH of other bytes on process two completes
    first, is refused (hash mismatch) and deletes the upload's objects; an admin re-admits the upload (replay).
    The stalled PATCH read the row at offset 0, as the replay leaves it: it must not complete the row onto its
    deleted objects. It gets a 409, and the client's resumed upload completes."""
    one, two = processes()
    data = os.urandom(2 * CHUNK)
    await one.create(WHO, declared("a1", data))
    stalled = Stalled(data)
    patch = asyncio.ensure_future(one.receive(WHO, "a1", 0, stalled.body()))
    await stalled.sent.wait()

    with pytest.raises(ApiError) as mismatch:
        await two.receive(WHO, "a1", 0, one_piece(os.urandom(2 * CHUNK)))
    assert (mismatch.value.status, mismatch.value.code) == (422, "attachment_hash_mismatch")
    replayed = await two.replay("acme", "a1")
    assert (replayed.state, replayed.upload_offset) == ("uploading", 0)
    await stalled_patch_is_refused(one, stalled, patch)

    await uploaded_again(one, data)


# --- the objects of a PATCH that lost -------------------------------------------------------------------------


async def loser_is_refused_and_the_winner_kept(
    one: UploadService, loser: asyncio.Future[Any], data: bytes, done: AttachmentRecord
) -> None:
    """The losing PATCH gets a 409; the completed upload reads ``data`` and keeps only the objects it names."""
    with pytest.raises(ApiError) as refused:
        await loser
    assert (refused.value.status, refused.value.code) == (409, "offset_mismatch")
    assert await (await stored_blob(one, "a1")).read_all() == data
    assert await stored_keys(one, "a1") == named(done)


async def test_a_losing_patch_whose_objects_the_completion_deleted_gets_409_on_the_filesystem_store(
    tmp_path: Path,
) -> None:
    """On the filesystem store a PATCH syncs (fsyncs) its objects before it moves the offset. The losing PATCH of
    a race has put its objects when the winner, on the other process, completes the upload and deletes every
    object its row does not name: the loser's sync finds its files gone. That is a lost race like any other, a
    409, not an unhandled error (a 500 on the tus route)."""
    blobs = MeetingBlobs(FilesystemBlobStore(tmp_path / "blobs"))
    one, two = processes(blobs)
    data = os.urandom(4 * CHUNK)
    await one.create(WHO, declared("a1", data))

    winner = asyncio.ensure_future(one.receive(WHO, "a1", 0, one_piece(data)))
    while blobs.arrived < 1:
        await asyncio.sleep(0)  # the winner has put every chunk and waits to sync them
    loser = asyncio.ensure_future(two.receive(WHO, "a1", 0, one_piece(data[: 2 * CHUNK])))
    done = await winner  # the loser put chunks 0 and 1 under its token; the winner's completion deleted them
    assert done.state == "available"
    blobs.second_may_go.set()
    await loser_is_refused_and_the_winner_kept(one, loser, data, done)


async def test_a_losing_patch_deletes_its_objects_at_once() -> None:
    """Two PATCHes from the same offset on two processes both put their objects; the winner moves the offset. The
    loser's objects are named by no row, and never will be (its token was never recorded): it deletes them
    itself, rather than leaving them until the upload completes or expires."""
    first = service(CHUNK)
    blobs = MeetingBlobs(first.blobs)
    one, two = processes(blobs)
    data = os.urandom(3 * CHUNK + 10)
    await one.create(WHO, declared("a1", data))

    winner = asyncio.ensure_future(one.receive(WHO, "a1", 0, one_piece(data[: 2 * CHUNK])))
    while blobs.arrived < 1:
        await asyncio.sleep(0)
    loser = asyncio.ensure_future(two.receive(WHO, "a1", 0, one_piece(os.urandom(2 * CHUNK))))
    row = await winner
    assert row.upload_offset == 2 * CHUNK
    blobs.second_may_go.set()
    with pytest.raises(ApiError) as refused:
        await loser
    assert (refused.value.status, refused.value.code) == (409, "offset_mismatch")
    assert await stored_keys(one, "a1") == named_so_far(row)  # the winner's two chunks, nothing of the loser's

    done = await one.receive(WHO, "a1", 2 * CHUNK, one_piece(data[2 * CHUNK :]))
    assert await (await stored_blob(one, "a1")).read_all() == data
    assert await stored_keys(one, "a1") == named(done)


async def test_objects_a_losing_patch_puts_after_the_upload_completed_do_not_stay() -> None:
    """A PATCH on a slow link (process two) has put one chunk when the same upload, sent again on process one,
    completes; the completion deletes what its row does not name, that chunk included. The slow PATCH's other
    chunks arrive after it: named by no row, and no completion will come to delete them. The loser gets a 409 and
    deletes them itself: exactly the completed row's objects stay."""
    one, two = processes()
    data = os.urandom(4 * CHUNK)
    await one.create(WHO, declared("a1", data))
    slow = Stalled(data[:CHUNK], data[CHUNK:])
    loser = asyncio.ensure_future(two.receive(WHO, "a1", 0, slow.body()))
    await slow.sent.wait()

    done = await one.receive(WHO, "a1", 0, one_piece(data))
    assert done.state == "available"
    slow.go.set()
    await loser_is_refused_and_the_winner_kept(one, loser, data, done)


async def _then_gone(data: bytes) -> AsyncIterator[bytes]:
    yield data
    raise ClientGone


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        ("checksum_mismatch", (460, "checksum_mismatch")),
        ("body_too_large", (413, "body_too_large")),
        ("client_gone_with_checksum", None),
    ],
)
async def test_a_patch_that_fails_before_moving_the_offset_leaves_no_objects(
    failure: str, expected: tuple[int, str] | None
) -> None:
    """A PATCH that puts whole chunks and then fails before any compare-and-set could record them: its body does
    not match its ``Upload-Checksum``, or goes past the declared length, or its client disconnects (with a
    checksum, nothing of it is committed). No row will ever name its objects: it deletes them. What is stored
    is exactly what the row names, and the upload resumes from its offset."""
    uploads = service(CHUNK)
    data = os.urandom(4 * CHUNK + 10)
    await uploads.create(WHO, declared("a1", data))
    at = 2 * CHUNK + 10
    row = await uploads.receive(WHO, "a1", 0, one_piece(data[:at]))  # chunks 0 and 1, and a tail
    rest = data[at:]  # fills chunks 2 and 3 (put as they fill) and 10 bytes of the last one
    body: AsyncIterator[bytes]
    checksum: tuple[str, bytes] | None
    if failure == "checksum_mismatch":
        body, checksum = one_piece(rest), ("sha256", hashlib.sha256(b"something else").digest())
    elif failure == "body_too_large":
        body, checksum = pieces(rest + b"!", [len(rest)]), None
    else:
        body, checksum = _then_gone(rest), ("sha256", hashlib.sha256(rest).digest())

    with pytest.raises((ApiError, ClientGone)) as failed:
        await uploads.receive(WHO, "a1", at, body, checksum)
    if expected is None:
        assert type(failed.value) is ClientGone
    else:
        assert isinstance(failed.value, ApiError)
        assert (failed.value.status, failed.value.code) == expected
    assert await row_of(uploads, "a1") == row
    assert await stored_keys(uploads, "a1") == named_so_far(row)

    done = await uploads.receive(WHO, "a1", at, one_piece(rest))
    assert await (await stored_blob(uploads, "a1")).read_all() == data
    assert await stored_keys(uploads, "a1") == named(done)


# --- re-encryption while an upload deduplicates onto the blob it reseals ----------------------------------------


async def test_a_dedup_completing_during_reencryption_keeps_the_objects_it_reads() -> None:
    """After a key rotation, the re-encryption reads the rows of a blob and reseals it under the new version.
    Meanwhile an upload of the same content completes on another process and is deduplicated onto the blob's
    old version (the owner's row has not moved yet). The re-encryption must not delete the old version's
    objects while that row reads them: it reads its bytes, and the next run moves it too, after which only the
    new version's objects are left."""
    keys = TwoVersions()
    first = service(CHUNK)
    blobs = PausedPut(first.blobs, when=lambda key: "/v2/" in key)
    one, two = processes(blobs, ciphers=keys)
    data = os.urandom(3 * CHUNK + 5)
    await one.create(WHO, declared("x", data))
    owner = await one.receive(WHO, "x", 0, one_piece(data))
    assert (owner.state, owner.key_version) == ("available", 1)
    await two.create(WHO, declared("y", data))  # the same content, under version 1
    await two.receive(WHO, "y", 0, one_piece(data[:CHUNK]))

    keys.current = 2
    reencryption = AttachmentKeys(one.meta, blobs)
    running = asyncio.ensure_future(reencryption.reencrypt("acme", await keys.cipher("acme")))
    await blobs.paused.wait()  # it read the rows (x available, y still uploading) and reseals x
    deduplicated = await two.receive(WHO, "y", CHUNK, one_piece(data[CHUNK:]))
    assert (deduplicated.state, deduplicated.blob_owner, deduplicated.key_version) == ("available", "x", 1)
    blobs.go.set()
    assert await running == (1, 0)

    assert (await row_of(one, "x")).key_version == 2
    assert (await row_of(one, "y")).key_version == 1
    assert await (await stored_blob(one, "y")).read_all() == data
    assert await (await stored_blob(one, "x")).read_all() == data

    assert await reencryption.reencrypt("acme", await keys.cipher("acme")) == (1, 0)  # y's blob moves now
    y = await row_of(one, "y")
    assert (y.blob_owner, y.key_version) == ("x", 2)
    assert await (await stored_blob(one, "y")).read_all() == data
    assert await (await stored_blob(one, "x")).read_all() == data
    assert await stored_keys(one, "x") == named(await row_of(one, "x"))
    assert await stored_keys(one, "y") == set()


# --- objects a PATCH read, deleted by another process's request -------------------------------------------------


async def test_a_patch_that_lost_the_tail_it_read_to_another_process_gets_409(caplog: pytest.LogCaptureFixture) -> None:
    """A PATCH on process two reads the row at an offset inside a chunk; before it reads the tail object there,
    a PATCH from the same offset on process one commits and deletes that tail. Process two lost a race: a 409
    ``offset_mismatch``, with no integrity failure logged (nothing stored was damaged)."""
    one, two = processes()
    data = os.urandom(3 * CHUNK)
    await one.create(WHO, declared("a1", data))
    await one.receive(WHO, "a1", 0, one_piece(data[:74]))  # chunk 0, and the tail at 74
    paused = PausedReads(two.meta)
    late = UploadService(paused, two.blobs, two.ciphers, two.settings, two.clock)
    second = asyncio.ensure_future(late.receive(WHO, "a1", 74, one_piece(data[74:100])))
    await paused.read.wait()  # process two has the row at offset 74

    row = await one.receive(WHO, "a1", 74, one_piece(data[74:90]))  # deletes the tail at 74
    paused.go.set()
    with pytest.raises(ApiError) as refused:
        await second
    assert (refused.value.status, refused.value.code) == (409, "offset_mismatch")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert await row_of(one, "a1") == row
    assert await stored_keys(one, "a1") == named_so_far(row)


async def test_a_patch_whose_committed_chunks_a_termination_elsewhere_deleted_gets_409(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A PATCH on process two reads the row and, having no SHA-256 state of the upload, reads its committed
    chunks back to hash them; the client's DELETE on process one has removed the upload and its objects just
    before. That is an upload gone meanwhile: a 409 ``offset_mismatch``, not a 500 ``data_integrity`` with an
    integrity failure logged."""
    one, two = processes()
    data = os.urandom(3 * CHUNK)
    await one.create(WHO, declared("a1", data))
    await one.receive(WHO, "a1", 0, one_piece(data[: 2 * CHUNK]))
    paused = PausedReads(two.meta)
    late = UploadService(paused, two.blobs, two.ciphers, two.settings, two.clock)
    second = asyncio.ensure_future(late.receive(WHO, "a1", 2 * CHUNK, one_piece(data[2 * CHUNK :])))
    await paused.read.wait()

    await one.terminate(WHO, "a1")
    paused.go.set()
    with pytest.raises(ApiError) as refused:
        await second
    assert (refused.value.status, refused.value.code) == (409, "offset_mismatch")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert await one.meta.get_attachment("acme", "a1") is None
    assert await stored_keys(one, "a1") == set()


# --- generations of one upload id: a restart, a re-creation, an empty file created twice -------------------------


class PausedOwnerCount:
    """An attachment store whose second ``blob_users`` call once armed (an expiry restart's drop of the old
    objects, after its compare-and-set; the first is the creation's reuse check) waits until ``go``."""

    def __init__(self, inner: AttachmentStore) -> None:
        self.inner = inner
        self.armed = False
        self.calls = 0
        self.paused = asyncio.Event()
        self.go = asyncio.Event()

    async def blob_users(self, tenant_id: str, owner: str, key_version: int | None = None) -> int:
        if self.armed:
            self.calls += 1
            if self.calls == 2:
                self.armed = False
                self.paused.set()
                await self.go.wait()
        return await self.inner.blob_users(tenant_id, owner, key_version)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_an_expiry_restart_drops_only_the_objects_from_before_it() -> None:
    """Process two restarts an expired upload and is about to drop its old objects when the device's first PATCH of
    the restarted upload commits on process one: the drop takes what was there before the restart, not those."""
    clock = Clock()
    one, two = processes(clock=clock)
    paused = PausedOwnerCount(two.meta)
    two = UploadService(paused, two.blobs, two.ciphers, two.settings, clock)
    data = os.urandom(3 * CHUNK)
    await one.create(WHO, declared("a1", data))
    await one.receive(WHO, "a1", 0, one_piece(data[:CHUNK]))  # objects of the first generation
    expire(one, clock)
    paused.armed = True
    restart = asyncio.ensure_future(two.create(WHO, declared("a1", data)))
    await paused.paused.wait()  # restarted (offset 0, a fresh token); the old objects not yet dropped
    row = await one.receive(WHO, "a1", 0, one_piece(data[: 2 * CHUNK]))
    paused.go.set()
    await restart

    assert await stored_keys(one, "a1") == named_so_far(row)  # the new generation's chunks, and only them
    done = await one.receive(WHO, "a1", 2 * CHUNK, one_piece(data[2 * CHUNK :]))
    assert done.state == "available"
    assert await (await stored_blob(one, "a1")).read_all() == data


class PausedSecondRead:
    """An attachment store whose second row read, once answered, waits until ``go`` (``paused`` says it is
    waiting): for a termination, its check that the row was not created again before it deletes the objects."""

    def __init__(self, inner: AttachmentStore) -> None:
        self.inner = inner
        self.reads = 0
        self.paused = asyncio.Event()
        self.go = asyncio.Event()

    async def get_attachment(self, tenant_id: str, attachment_id: str) -> AttachmentRecord | None:
        row = await self.inner.get_attachment(tenant_id, attachment_id)
        self.reads += 1
        if self.reads == 2:
            self.paused.set()
            await self.go.wait()
        return row

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_termination_drops_only_the_objects_listed_before_its_row_went() -> None:
    """Process two terminates an upload and is about to delete its objects (its row already gone, checked not
    created again) when the device creates the upload again on process one and its first PATCH commits: the
    delete takes the terminated upload's objects, listed before its row went, not the new upload's."""
    one, two = processes()
    paused = PausedSecondRead(two.meta)
    two = UploadService(paused, two.blobs, two.ciphers, two.settings, two.clock)
    data = os.urandom(3 * CHUNK)
    await one.create(WHO, declared("a1", data))
    old = await one.receive(WHO, "a1", 0, one_piece(data[:CHUNK]))
    old_keys = named_so_far(old)
    terminating = asyncio.ensure_future(two.terminate(WHO, "a1"))
    await paused.paused.wait()  # the row is deleted and found not created again; its objects not yet deleted
    await one.create(WHO, declared("a1", data))
    row = await one.receive(WHO, "a1", 0, one_piece(data[: 2 * CHUNK]))
    assert not named_so_far(row) & old_keys  # the new PATCH wrote objects of its own
    paused.go.set()
    await terminating

    assert await stored_keys(one, "a1") == named_so_far(row)  # the old objects went, the new ones stayed
    done = await one.receive(WHO, "a1", 2 * CHUNK, one_piece(data[2 * CHUNK :]))
    assert done.state == "available"
    assert await (await stored_blob(one, "a1")).read_all() == data


async def test_a_patch_in_flight_across_a_termination_and_creation_in_the_same_millisecond_gets_409() -> None:
    """The old row terminated and the id created again within one millisecond (same creation time, same offset):
    the new row's own token still tells it apart, so the old PATCH cannot complete it onto objects that went."""
    one, two = processes()  # the clock does not move: both creations have the same time
    data = os.urandom(2 * CHUNK)
    await one.create(WHO, declared("a1", data))
    stalled = Stalled(data)
    patch = asyncio.ensure_future(one.receive(WHO, "a1", 0, stalled.body()))
    await stalled.sent.wait()
    await two.terminate(WHO, "a1")
    await two.create(WHO, declared("a1", data))
    await stalled_patch_is_refused(one, stalled, patch)  # the old PATCH's objects went with it
    await uploaded_again(one, data)


async def test_an_empty_file_created_on_two_processes_at_once_is_one_attachment() -> None:
    """A retried POST of an empty file reaches another process while the first is completing it: both answer with
    the completed attachment, and only the object its row names is stored."""
    one, two = processes()
    slow = PausedPut(two.blobs)
    two = UploadService(two.meta, slow, two.ciphers, two.settings, two.clock)
    late = asyncio.ensure_future(two.create(WHO, declared("e", b"")))
    await slow.paused.wait()  # process two read the row (uploading) and is putting its empty chunk
    done = await one.create(WHO, declared("e", b""))
    slow.go.set()

    again = await late
    assert done.state == again.state == "available"
    assert again == await row_of(one, "e")
    assert await stored_keys(one, "e") == named(done)
    assert await (await stored_blob(one, "e")).read_all() == b""
