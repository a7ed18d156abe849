"""Laws of attachment uploads: any split of the bytes into PATCHes and pieces stores the same file, and any
change to any stored object is detected, never returned as data."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Iterable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st
from obstore.store import MemoryStore

from syncserver.attachments import chunks
from syncserver.attachments.blob_obstore import ObstoreBlobStore
from syncserver.attachments.chunks import ChunkError, SealedBlob
from syncserver.attachments.settings import AttachmentSettings
from syncserver.attachments.uploads import Declared, UploadService
from syncserver.auth.tokens import Principal
from syncserver.keys.keyring import TenantCipher
from syncstore.memory_attachments import MemoryAttachmentStore

WHO = Principal("acme", "driver-1", "driver")


class OneCipher:
    def __init__(self) -> None:
        key = AESGCM.generate_key(bit_length=256)
        self._cipher = TenantCipher("acme", {1: AESGCM(key)}, 1, {1: os.urandom(32)})

    async def cipher(self, tenant: str, need: Iterable[int] = ()) -> TenantCipher:
        return self._cipher


def service(chunk: int) -> UploadService:
    files = AttachmentSettings(chunk_bytes=chunk, media_types=("image/*",))
    return UploadService(MemoryAttachmentStore(), ObstoreBlobStore(MemoryStore()), OneCipher(), files)


async def pieces(data: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    start = 0
    for end in [*cuts, len(data)]:
        if end > start:
            yield data[start:end]
            start = end


def split(data: bytes, points: list[int]) -> list[int]:
    return sorted({p % (len(data) + 1) for p in points})


async def upload(uploads: UploadService, data: bytes, patches: list[int], cuts: list[int]) -> str:
    declared = Declared("a1", len(data), hashlib.sha256(data).hexdigest(), "image/png")
    row = await uploads.create(WHO, declared)
    bounds = [*split(data, patches), len(data)]
    offset = row.upload_offset
    for end in bounds:
        if row.state == "available":  # an empty file is complete at creation
            break
        if end <= offset:
            continue
        body = data[offset:end]
        inner = [c - offset for c in split(data, cuts) if offset < c < end]
        row = await uploads.receive(WHO, "a1", offset, pieces(body, inner))
        offset = row.upload_offset
    assert row.state == "available"
    return row.blob_owner or row.id


async def stored_blob(uploads: UploadService, owner: str) -> SealedBlob:
    """The owner's blob as its row names it (each chunk under the token of the PATCH that wrote it)."""
    row = await uploads.meta.get_attachment("acme", owner)
    assert row is not None
    return SealedBlob.of(uploads.blobs, await uploads.ciphers.cipher("acme"), row)


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=700),
    chunk=st.sampled_from([16, 64, 100, 256]),
    patches=st.lists(st.integers(min_value=0), max_size=6),
    cuts=st.lists(st.integers(min_value=0), max_size=10),
)
def test_any_split_into_patches_and_pieces_stores_the_same_bytes(
    data: bytes, chunk: int, patches: list[int], cuts: list[int]
) -> None:
    async def check() -> None:
        uploads = service(chunk)
        owner = await upload(uploads, data, patches, cuts)
        blob = await stored_blob(uploads, owner)
        assert b"".join([p async for p in blob.read()]) == data
        assert await blob.read_all() == data
        # Completed, it keeps exactly the objects its row names: no tail, nothing a PATCH left behind.
        named = chunks.blob_keys("acme", owner, 1, len(data), chunk, blob.tokens)
        assert set(await uploads.blobs.list(f"acme/{owner}/")) == named

    asyncio.run(check())


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=500),
    which=st.integers(min_value=0),
    where=st.integers(min_value=0),
    flip=st.integers(min_value=1, max_value=255),
)
def test_any_changed_byte_in_any_stored_chunk_is_detected(data: bytes, which: int, where: int, flip: int) -> None:
    async def check() -> None:
        uploads = service(64)
        owner = await upload(uploads, data, [], [])
        keys = await uploads.blobs.list(f"acme/{owner}/")
        key = keys[which % len(keys)]
        raw = bytearray(await uploads.blobs.get(key))
        raw[where % len(raw)] ^= flip
        await uploads.blobs.put(key, bytes(raw))
        blob = await stored_blob(uploads, owner)
        try:
            got = b"".join([p async for p in blob.read()])
        except ChunkError:
            return
        raise AssertionError(f"tampered object {key} was read as {len(got)} bytes")

    asyncio.run(check())


@settings(max_examples=200, deadline=None)
@given(
    patches=st.lists(st.tuples(st.integers(min_value=0, max_value=40), st.sampled_from("abcdef")), max_size=12),
    index=st.integers(min_value=0, max_value=50),
)
def test_a_chunks_token_is_that_of_the_last_patch_that_wrote_from_at_or_before_it(
    patches: list[tuple[int, str]], index: int
) -> None:
    """Segments built PATCH by PATCH (each from the chunk it started in) name, for any chunk, the token of the last
    PATCH that started at or before it; parsed once (a download's lookups) or per call, the same answer."""
    tokens: str | None = None
    wrote: dict[int, str] = {}  # chunk -> token, as the PATCHes wrote them in order
    for start, token in sorted(patches, key=lambda p: p[0]):  # offsets only grow
        tokens = chunks.with_segment(tokens, start, token * 12)
        for i in range(start, 51):
            wrote[i] = token * 12
    assert chunks.token_at(tokens, index) == chunks.Tokens(tokens).at(index) == wrote.get(index)
