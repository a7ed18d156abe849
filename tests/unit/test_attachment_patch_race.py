"""Two PATCHes of one upload racing on two server processes: the stored bytes are the winner's, always.

Each process refuses a second PATCH of an upload it is already receiving, but two processes do not see each
other's requests; the row's compare-and-set picks the winner. Both PATCHes write their objects before either
moves the offset, so if they wrote under the same names, the loser's bytes would replace the winner's: a
verified, ``available`` attachment serving bytes other than the ones it was verified against. Each PATCH
writes under a token of its own, and the row names the winner's.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from syncserver.attachments import chunks
from syncserver.attachments.blobstore import BlobStore
from syncserver.attachments.uploads import Declared, UploadService
from syncserver.errors import ApiError
from tests.property.test_attachment_chunks import WHO, service, stored_blob

CHUNK = 64


class MeetingBlobs:
    """A blob store shared by two processes whose PATCHes both reach ``sync`` (every object written, the offset
    not yet moved) before either goes on: the first to arrive goes on first, the second once told to."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.arrived = 0
        self.both = asyncio.Event()
        self.second_may_go = asyncio.Event()

    async def sync(self, keys: Sequence[str]) -> None:
        self.arrived += 1
        if self.arrived == 1:
            await self.both.wait()
        elif self.arrived == 2:
            self.both.set()
            await self.second_may_go.wait()
        await self.inner.sync(keys)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def one_piece(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_the_losing_patch_of_a_race_between_processes_leaves_the_winners_bytes() -> None:
    first = service(CHUNK)
    blobs = MeetingBlobs(first.blobs)
    one = UploadService(first.meta, blobs, first.ciphers, first.settings)  # process one
    two = UploadService(first.meta, blobs, first.ciphers, first.settings)  # process two: its own request locks
    data = os.urandom(3 * CHUNK + 10)
    other = os.urandom(2 * CHUNK)  # another request's body for the same offsets: a buggy or hostile client
    await one.create(WHO, Declared("a1", len(data), hashlib.sha256(data).hexdigest(), "image/png"))

    winner = asyncio.ensure_future(one.receive(WHO, "a1", 0, one_piece(data[: 2 * CHUNK])))
    while blobs.arrived < 1:
        await asyncio.sleep(0)  # the winner has written its objects and waits to move the offset
    loser = asyncio.ensure_future(two.receive(WHO, "a1", 0, one_piece(other)))
    row = await winner  # both wrote their objects for chunks 0 and 1; the winner's offset moved
    assert row.upload_offset == 2 * CHUNK
    blobs.second_may_go.set()
    with pytest.raises(ApiError) as refused:
        await loser
    assert refused.value.code == "offset_mismatch"

    done = await one.receive(WHO, "a1", 2 * CHUNK, one_piece(data[2 * CHUNK :]))
    assert done.state == "available"
    blob = await stored_blob(one, "a1")
    assert await blob.read_all() == data  # the bytes it was verified against, not the loser's
    # The loser's objects went with the completion: only what the row names is left.
    named = chunks.blob_keys("acme", "a1", 1, len(data), CHUNK, done.chunk_tokens)
    assert set(await first.blobs.list("acme/a1/")) == named


async def test_a_patch_cut_off_midway_leaves_nothing_once_the_upload_completes() -> None:
    """A dropped connection (or a crash) after some chunks were written: the resumed PATCH writes its own, and
    completion removes the ones nobody names."""
    uploads = service(CHUNK)
    data = os.urandom(4 * CHUNK)
    await uploads.create(WHO, Declared("a1", len(data), hashlib.sha256(data).hexdigest(), "image/png"))
    writer = chunks.new_token()
    cipher = await uploads.ciphers.cipher("acme")
    for index in (0, 1):  # what a PATCH wrote before the process died, its offset never moved
        sealed = chunks.seal_chunk(cipher, "a1", index, False, data[index * CHUNK : (index + 1) * CHUNK], 1, writer)
        await uploads.blobs.put(chunks.chunk_key("acme", "a1", 1, index, writer), sealed)

    done = await uploads.receive(WHO, "a1", 0, one_piece(data))
    assert done.state == "available"
    assert await (await stored_blob(uploads, "a1")).read_all() == data
    named = chunks.blob_keys("acme", "a1", 1, len(data), CHUNK, done.chunk_tokens)
    assert set(await uploads.blobs.list("acme/a1/")) == named
