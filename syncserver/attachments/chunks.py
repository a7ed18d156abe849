"""Attachment bytes at rest: fixed-size chunks, each sealed with AES-256-GCM under the tenant's data key.

A blob of ``size`` bytes is ``max(1, ceil(size / chunk_bytes))`` chunks, object
``<tenant>/<owner>/v<key version>/<index:08d>`` each. Every chunk is sealed by
``TenantCipher.seal`` with associated data naming the tenant, the table
``attachment``, the owning attachment id, the chunk index and whether it is the
last chunk (and the key version, as for rows). So a flipped byte, two swapped
chunks, a chunk copied from another attachment or tenant, and a blob cut short
(its new last chunk lacks the "last" flag) all fail to open: ``ChunkError``,
never wrong bytes.

An upload in progress keeps the bytes after its last whole chunk in a sealed
``tail-<offset>`` object, so a resumed upload (even after a crash) continues
exactly where the committed offset says.

Every PATCH writes its objects under a token of its own (``<index>-<token>``,
``tail-<offset>-<token>``, the token also in the associated data), and the row
records which token holds which chunks (``AttachmentRecord.chunk_tokens``,
segments ``"<first index>:<token>,…"``) in the same compare-and-set that moves
its offset. So two PATCHes of one upload racing on two server processes never
write the same object: the loser's objects are simply not named by the row
(and are swept when the upload completes), and the stored bytes are exactly
the ones the winner hashed. A row without tokens (``None``: written before
tokens, or re-encrypted, where every writer writes the same verified content)
names its objects ``<index>`` and ``tail-<offset>``.
"""

from __future__ import annotations

import asyncio
import bisect
import secrets
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from syncserver.attachments.blobstore import BlobNotFound, BlobStore
from syncserver.keys.envelope import OVERHEAD, BytesLike, DecryptionError
from syncserver.keys.keyring import TenantCipher

if TYPE_CHECKING:
    from syncstore.attachments import AttachmentRecord

TABLE = "attachment"


class ChunkError(Exception):
    """A chunk is missing or does not open: the stored blob was tampered with or damaged."""


def chunk_count(size: int, chunk_bytes: int) -> int:
    return max(1, -(-size // chunk_bytes))


def prefix(tenant: str, owner: str) -> str:
    return f"{tenant}/{owner}/"


def new_token() -> str:
    """A PATCH's own token: 48 random bits, so two PATCHes of one upload never share one."""
    return secrets.token_hex(6)


def _segments(tokens: str | None) -> list[tuple[int, str]]:
    if not tokens:
        return []
    found = []
    for part in tokens.split(","):
        first, _, token = part.partition(":")
        found.append((int(first), token))
    return found


class Tokens:
    """A row's segments, parsed once, for looking up many chunks (a download, a sweep): ``at(index)``."""

    def __init__(self, tokens: str | None) -> None:
        segments = _segments(tokens)
        self.starts = [first for first, _ in segments]
        self.tokens = [token for _, token in segments]

    def at(self, index: int) -> str | None:
        """The token of the PATCH that wrote chunk ``index`` (the last segment starting at or before it)."""
        i = bisect.bisect_right(self.starts, index) - 1
        return self.tokens[i] if i >= 0 else None


def token_at(tokens: str | None, index: int) -> str | None:
    """``Tokens(tokens).at(index)``, for one lookup."""
    return Tokens(tokens).at(index)


def last_token(tokens: str | None) -> str | None:
    """The token of the last PATCH recorded: the one that wrote the tail, if there is one."""
    segments = _segments(tokens)
    return segments[-1][1] if segments else None


def with_segment(tokens: str | None, first: int, token: str) -> str:
    """``tokens`` after a PATCH that wrote chunks from ``first`` on (and any tail) under ``token``.

    Segments from ``first`` on are replaced: an earlier PATCH that started in the same chunk wrote only a
    tail there, which this PATCH has read and sealed again."""
    kept = [f"{i}:{t}" for i, t in _segments(tokens) if i < first]
    return ",".join([*kept, f"{first}:{token}"])


def _suffix(token: str | None) -> str:
    return f"-{token}" if token else ""


def chunk_key(tenant: str, owner: str, key_version: int, index: int, token: str | None = None) -> str:
    return f"{tenant}/{owner}/v{key_version}/{index:08d}{_suffix(token)}"


def tail_key(tenant: str, owner: str, key_version: int, offset: int, token: str | None = None) -> str:
    return f"{tenant}/{owner}/v{key_version}/tail-{offset}{_suffix(token)}"


def _row(owner: str, index: int, last: bool, token: str | None) -> str:
    # Ids and tokens never contain "/", so this names exactly one (owner, index, last, token).
    return f"{owner}/{index}/{'last' if last else 'more'}" + (f"/{token}" if token else "")


def seal_chunk(
    cipher: TenantCipher, owner: str, index: int, last: bool, data: BytesLike, key_version: int, token: str | None
) -> bytearray:
    # Chunks of one blob share its key version, even if the tenant's key rotated during the upload.
    return cipher.seal_buffer(TABLE, _row(owner, index, last, token), data, key_version)


def open_chunk(
    cipher: TenantCipher, owner: str, index: int, last: bool, blob: BytesLike, key_version: int, token: str | None
) -> bytes:
    try:
        return cipher.open(TABLE, _row(owner, index, last, token), key_version, blob)
    except DecryptionError as exc:
        raise ChunkError(f"chunk {index} of attachment {owner} does not open") from exc


def open_chunk_into(
    cipher: TenantCipher,
    owner: str,
    index: int,
    last: bool,
    blob: BytesLike,
    key_version: int,
    token: str | None,
    out: memoryview,
) -> None:
    """``open_chunk`` into ``out``, exactly the chunk's plaintext length (on ``ChunkError`` discard ``out``)."""
    try:
        cipher.open_into(TABLE, _row(owner, index, last, token), key_version, blob, out)
    except DecryptionError as exc:
        raise ChunkError(f"chunk {index} of attachment {owner} does not open") from exc


def _tail_row(owner: str, offset: int, token: str | None) -> str:
    return f"{owner}/tail/{offset}" + (f"/{token}" if token else "")


def seal_tail(
    cipher: TenantCipher, owner: str, offset: int, data: BytesLike, key_version: int, token: str | None
) -> bytearray:
    return cipher.seal_buffer(TABLE, _tail_row(owner, offset, token), data, key_version)


def open_tail(
    cipher: TenantCipher, owner: str, offset: int, blob: BytesLike, key_version: int, token: str | None
) -> bytes:
    try:
        return cipher.open(TABLE, _tail_row(owner, offset, token), key_version, blob)
    except DecryptionError as exc:
        raise ChunkError(f"the partial chunk of upload {owner} does not open") from exc


def blob_keys(tenant: str, owner: str, key_version: int, size: int, chunk_bytes: int, tokens: str | None) -> set[str]:
    """The keys of every chunk of a whole blob as a row names them."""
    named = Tokens(tokens)
    return {chunk_key(tenant, owner, key_version, i, named.at(i)) for i in range(chunk_count(size, chunk_bytes))}


OFF_LOOP_BYTES = 256 * 1024
"""A sealed chunk at least this long is opened on a worker thread (``SealedBlob._open_off_loop``)."""


def _discard(task: asyncio.Future[bytes]) -> None:
    """Cancel a read ahead that is no longer wanted, and retrieve its outcome if it already has one."""
    if task.done():
        if not task.cancelled():
            task.exception()  # retrieved: not reported as "never retrieved"
    else:
        task.cancel()


class SealedBlob:
    """Reads the plaintext of one stored blob, chunk by chunk (memory: two chunks, see ``read``)."""

    def __init__(
        self,
        blobs: BlobStore,
        cipher: TenantCipher,
        tenant: str,
        owner: str,
        key_version: int,
        size: int,
        chunk: int,
        tokens: str | None = None,
    ) -> None:
        self.blobs = blobs
        self.cipher = cipher
        self.tenant = tenant
        self.owner = owner
        self.key_version = key_version
        self.size = size
        self.chunk = chunk
        self.count = chunk_count(size, chunk)
        self.tokens = tokens
        self._named = Tokens(tokens)

    @classmethod
    def of(cls, blobs: BlobStore, cipher: TenantCipher, row: AttachmentRecord) -> SealedBlob:
        """The blob ``row`` reads: its owner's objects (its own unless deduplicated), as the row names them."""
        return cls(
            blobs,
            cipher,
            row.tenant_id,
            row.blob_owner or row.id,
            row.key_version,
            row.size,
            row.chunk_bytes,
            row.chunk_tokens,
        )

    async def read_chunk(self, index: int) -> bytes:
        """The plaintext of chunk ``index``, read and authenticated (on a worker thread: see ``_open_off_loop``)."""
        return await self._open_off_loop(index, await self._get(index))

    async def _open_off_loop(self, index: int, blob: BytesLike) -> bytes:
        """``_open`` on a worker thread for a chunk of ``OFF_LOOP_BYTES`` or more, else on the loop.

        AES-GCM releases the GIL: decrypting a 1 MiB chunk on the event loop's thread held up every other
        request for about 0.3 ms per chunk, twice per chunk of a streamed download (checked, then sent).
        """
        if len(blob) < OFF_LOOP_BYTES:
            return self._open(index, blob)
        return await asyncio.get_running_loop().run_in_executor(None, self._open, index, blob)

    async def _get(self, index: int) -> BytesLike:
        try:
            # The sealed length is known, so the store reads it in one request; a chunk cut short or grown
            # still fails (wrong length, or its tag over the bytes read).
            key = chunk_key(self.tenant, self.owner, self.key_version, index, self._named.at(index))
            return await self.blobs.get(key, self._length(index) + OVERHEAD)
        except BlobNotFound as exc:
            raise ChunkError(f"chunk {index} of attachment {self.owner} is missing") from exc

    async def read_all(self, start: int = 0, end: int | None = None) -> bytearray:
        """Plaintext of ``[start, end)`` in one buffer, its chunks fetched concurrently (for small ranges).

        Each chunk is opened as soon as it arrives, while the others are still being read, and each whole
        chunk is decrypted in place into the buffer: no buffer per chunk, no join. The first chunk that
        fails raises ``ChunkError`` (the others are still awaited, so no read is left running).
        """
        stop = self.size if end is None else end
        first = start // self.chunk
        last = max(first, min(self.count, -(-stop // self.chunk)) - 1)
        out = bytearray(max(0, stop - start))
        view = memoryview(out)

        async def fetch_and_open(index: int) -> None:
            blob = await self._get(index)
            base, length = index * self.chunk, self._length(index)
            lo, hi = max(start, base), min(stop, base + length)
            if (lo, hi) == (base, base + length):
                self._open_into(index, blob, view[lo - start : hi - start])
            elif hi > lo:
                view[lo - start : hi - start] = self._open(index, blob)[lo - base : hi - base]
            else:
                self._open(index, blob)  # authenticated even when none of it is wanted

        failures = [
            r
            for r in await asyncio.gather(*(fetch_and_open(i) for i in range(first, last + 1)), return_exceptions=True)
            if r is not None
        ]
        if failures:
            raise failures[0]
        return out

    def _length(self, index: int) -> int:
        return self.size - index * self.chunk if index == self.count - 1 else self.chunk

    def _open(self, index: int, blob: BytesLike) -> bytes:
        last = index == self.count - 1
        data = open_chunk(self.cipher, self.owner, index, last, blob, self.key_version, self._named.at(index))
        if len(data) != self._length(index):
            raise ChunkError(f"chunk {index} of attachment {self.owner} has the wrong length")
        return data

    def _open_into(self, index: int, blob: BytesLike, out: memoryview) -> None:
        if memoryview(blob).nbytes - OVERHEAD != len(out):
            raise ChunkError(f"chunk {index} of attachment {self.owner} has the wrong length")
        last = index == self.count - 1
        token = self._named.at(index)
        open_chunk_into(self.cipher, self.owner, index, last, blob, self.key_version, token, out)

    async def read(self, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Plaintext bytes ``[start, end)`` (``end`` defaults to the size), chunk by chunk.

        One chunk ahead: the next chunk is read and opened while the caller handles (sends) the current
        one, so at most two chunks are held, whatever the blob's size.
        """
        stop = self.size if end is None else end
        index = start // self.chunk
        if not (index * self.chunk < stop or (index == 0 and self.size == 0)):
            return
        ahead: asyncio.Future[bytes] | None = asyncio.ensure_future(self.read_chunk(index))
        try:
            while ahead is not None:
                data = await ahead
                following = index + 1
                more = following < self.count and following * self.chunk < stop
                ahead = asyncio.ensure_future(self.read_chunk(following)) if more else None
                base = index * self.chunk
                piece = data[max(0, start - base) : max(0, stop - base)]
                if piece:
                    yield piece
                index = following
        finally:
            if ahead is not None:
                _discard(ahead)  # the caller stopped early (a closed connection, a failed chunk)

    async def verify(self, start: int = 0, end: int | None = None) -> None:
        """Open every chunk covering ``[start, end)``; raise ``ChunkError`` at the first bad one."""
        async for _ in self.read(start, end):
            pass
