"""A streamed attachment reads one chunk ahead, no further, and opens large chunks off the event loop.

A download larger than ``HOLD_BYTES`` streams its chunks: while one is sent, the next is read and
opened, so at most two are held whatever the file's size; a 1 MiB chunk is decrypted on a worker
thread (AES-GCM releases the GIL), not on the event loop that serves every other request.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import pytest

from syncserver.attachments import chunks
from syncserver.attachments.blobstore import BlobStore
from syncserver.attachments.chunks import SealedBlob
from syncserver.keys.envelope import BytesLike
from tests.property.test_attachment_chunks import service, stored_blob, upload


async def _stored(data: bytes, chunk: int) -> SealedBlob:
    uploads = service(chunk)
    return await stored_blob(uploads, await upload(uploads, data, [], []))


class CountingBlobs:
    """The store, recording which chunks were asked for; ``hold`` keeps one chunk's read waiting."""

    def __init__(self, inner: BlobStore, hold: int | None = None) -> None:
        self.inner = inner
        self.asked: list[int] = []
        self.hold = hold
        self.held_cancelled = asyncio.Event()

    async def get(self, key: str, length: int | None = None) -> memoryview:
        index = int(key.rsplit("/", 1)[1].partition("-")[0])  # "<index>-<token>"
        self.asked.append(index)
        if index == self.hold:
            try:
                await asyncio.Event().wait()  # never set: only a cancel ends it
            except asyncio.CancelledError:
                self.held_cancelled.set()
                raise
        return await self.inner.get(key, length)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_stream_reads_one_chunk_ahead_and_no_further() -> None:
    data = os.urandom(640)
    blob = await _stored(data, 64)  # ten chunks
    counting = CountingBlobs(blob.blobs)
    blob.blobs = counting  # type: ignore[assignment]
    stream = blob.read()
    got = [await anext(stream)]
    await asyncio.sleep(0)  # let the read ahead start
    assert counting.asked == [0, 1]
    got.append(await anext(stream))
    await asyncio.sleep(0)
    assert counting.asked == [0, 1, 2]
    got += [piece async for piece in stream]
    assert b"".join(got) == data
    assert counting.asked == list(range(10))


async def test_a_stream_closed_early_cancels_its_read_ahead() -> None:
    blob = await _stored(os.urandom(300), 64)
    counting = CountingBlobs(blob.blobs, hold=1)
    blob.blobs = counting  # type: ignore[assignment]
    stream = blob.read()
    await anext(stream)
    await asyncio.sleep(0)
    await stream.aclose()  # the client went away while chunk 1 was being read
    await asyncio.wait_for(counting.held_cancelled.wait(), timeout=5)


async def test_large_chunks_are_opened_off_the_event_loop_and_small_ones_on_it(monkeypatch: pytest.MonkeyPatch) -> None:
    chunk = chunks.OFF_LOOP_BYTES
    data = os.urandom(2 * chunk + 1000)  # two whole chunks, then a short last one
    blob = await _stored(data, chunk)
    on_loop: dict[int, bool] = {}
    loop_thread = threading.current_thread()
    opened = SealedBlob._open

    def spy(self: SealedBlob, index: int, sealed: BytesLike) -> bytes:
        on_loop[index] = threading.current_thread() is loop_thread
        return opened(self, index, sealed)

    monkeypatch.setattr(SealedBlob, "_open", spy)
    assert b"".join([piece async for piece in blob.read()]) == data
    assert on_loop == {0: False, 1: False, 2: True}
