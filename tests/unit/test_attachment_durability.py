"""An upload's bytes are on disk before its offset moves: one fsync per object and directory per PATCH.

The filesystem blob store writes through obstore, which does not fsync; ``BlobStore.sync`` does, once
per PATCH for every object the PATCH wrote, before the row's offset (the 204) says the bytes are there.
``os.fsync`` is counted here by the path it syncs, in order with the metadata writes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from syncserver.attachments import chunks
from syncserver.attachments.blob_fs import FilesystemBlobStore
from syncserver.attachments.chunks import SealedBlob
from syncserver.attachments.settings import AttachmentSettings
from syncserver.attachments.uploads import Declared, UploadService
from syncserver.auth.tokens import Principal
from syncserver.keys.keyring import TenantCipher
from syncstore.attachments import AttachmentRecord
from syncstore.memory_attachments import MemoryAttachmentStore

WHO = Principal("acme", "driver-1", "driver")
CHUNK = 1000


class OneCipher:
    def __init__(self) -> None:
        self._cipher = TenantCipher("acme", {1: AESGCM(AESGCM.generate_key(bit_length=256))}, 1, {1: os.urandom(32)})

    async def cipher(self, tenant: str, need: Iterable[int] = ()) -> TenantCipher:
        return self._cipher


class Journal(MemoryAttachmentStore):
    """Records each metadata write in the same list as the fsyncs."""

    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events

    async def update_attachment(self, old: AttachmentRecord, new: AttachmentRecord) -> bool:
        self.events.append(f"row {new.state} {new.upload_offset}")
        return await super().update_attachment(old, new)


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = os.fsync

    def counting(fd: int) -> None:
        seen.append("fsync " + os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return seen


def service(root: Path, events: list[str], chunk: int = CHUNK) -> UploadService:
    files = AttachmentSettings(chunk_bytes=chunk, media_types=("image/*",))
    return UploadService(Journal(events), FilesystemBlobStore(root), OneCipher(), files)


async def body(data: bytes, piece: int = 700) -> AsyncIterator[bytes]:
    for start in range(0, len(data), piece):
        yield data[start : start + piece]


def synced(events: list[str], root: Path) -> list[str]:
    """The fsynced paths, relative to the blob root ("." for the root)."""
    base = str(root.resolve())
    return [os.path.relpath(e.removeprefix("fsync "), base) for e in events if e.startswith("fsync ")]


async def test_a_patch_fsyncs_each_object_it_wrote_and_its_directories_once_before_the_offset_moves(
    tmp_path: Path, events: list[str]
) -> None:
    root = tmp_path / "blobs"
    uploads = service(root, events)
    data = os.urandom(3 * CHUNK + 123)
    row = await uploads.create(WHO, Declared("a1", len(data), hashlib.sha256(data).hexdigest(), "image/png"))
    events.clear()

    row = await uploads.receive(WHO, "a1", 0, body(data[:2500]))  # two whole chunks and a tail

    first = chunks.token_at(row.chunk_tokens, 0)  # the PATCH's own token names what it wrote
    objects = [chunks.chunk_key("acme", "a1", 1, i, first) for i in (0, 1)] + [
        chunks.tail_key("acme", "a1", 1, 2500, first)
    ]
    directories = [".", "acme", "acme/a1", "acme/a1/v1"]
    assert sorted(synced(events, root)) == sorted(objects + directories)  # each once, nothing per put
    assert events[-1] == "row uploading 2500"  # every fsync came before the offset moved
    assert row.upload_offset == 2500

    events.clear()
    row = await uploads.receive(WHO, "a1", 2500, body(data[2500:]))  # the tail, then the last chunk

    second = chunks.token_at(row.chunk_tokens, 2)
    assert second not in (None, first)
    assert row.chunk_tokens == f"0:{first},2:{second}"
    objects = [chunks.chunk_key("acme", "a1", 1, i, second) for i in (2, 3)]
    assert sorted(synced(events, root)) == sorted([*objects, *directories])
    assert events[-1] == f"row available {len(data)}"  # the last PATCH completes the row in one write
    assert [e for e in events if e.startswith("row ")] == [events[-1]]
    assert row.state == "available"


async def test_a_patch_with_a_bad_checksum_syncs_nothing_and_keeps_the_offset(
    tmp_path: Path, events: list[str]
) -> None:
    root = tmp_path / "blobs"
    uploads = service(root, events)
    data = os.urandom(2 * CHUNK)
    await uploads.create(WHO, Declared("a1", len(data), hashlib.sha256(data).hexdigest(), "image/png"))
    events.clear()
    with pytest.raises(Exception, match="Upload-Checksum"):
        await uploads.receive(WHO, "a1", 0, body(data), ("sha1", b"\x00" * 20))
    assert events == []
    assert (await uploads.get(WHO, "a1")).upload_offset == 0


async def test_an_upload_begun_under_another_chunk_size_finishes_and_reads_under_its_own(
    tmp_path: Path, events: list[str]
) -> None:
    """Changing ``SYNC_ATTACHMENT_CHUNK_BYTES`` never touches stored or half-stored attachments."""
    root = tmp_path / "blobs"
    before = service(root, events, chunk=256)
    data = os.urandom(1000)
    await before.create(WHO, Declared("a1", len(data), hashlib.sha256(data).hexdigest(), "image/png"))
    await before.receive(WHO, "a1", 0, body(data[:600]))

    after = UploadService(before.meta, before.blobs, before.ciphers, AttachmentSettings(chunk_bytes=4096))
    row = await after.receive(WHO, "a1", 600, body(data[600:]))

    assert (row.state, row.chunk_bytes) == ("available", 256)
    named = chunks.blob_keys("acme", "a1", 1, len(data), 256, row.chunk_tokens)
    assert await before.blobs.list("acme/a1/") == sorted(named)  # and nothing else: the tail is gone
    cipher = await after.ciphers.cipher("acme")
    sealed = SealedBlob.of(after.blobs, cipher, row)
    assert await sealed.read_all() == data
    assert b"".join([p async for p in sealed.read(100, 900)]) == data[100:900]
