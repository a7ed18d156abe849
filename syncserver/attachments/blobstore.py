"""The ``BlobStore`` interface: where sealed attachment chunks are kept.

Backends are dumb object stores: put, get, delete, list by prefix. Chunking,
sealing, offsets and deduplication live above them (``chunks``, ``uploads``).
``FilesystemBlobStore`` (``blob_fs``, the default, under the data directory)
and ``S3BlobStore`` (``blob_s3``) both go through obstore; one contract suite
(``tests/contract/test_blob_store.py``) runs against both.

Usage::

    blobs = FilesystemBlobStore(Path(".sync/blobs"))
    await blobs.put("acme/a1/v1/00000000", sealed)
    await blobs.sync(["acme/a1/v1/00000000"])  # now it survives a power cut
    assert await blobs.get("acme/a1/v1/00000000") == sealed
    assert await blobs.list("acme/a1/") == ["acme/a1/v1/00000000"]
    await blobs.delete(["acme/a1/v1/00000000"])

Pitfalls:

* ``put`` is atomic (readers see the old object or the new one, never a
  prefix), but not necessarily durable against power loss: obstore's local
  store does not fsync. A crash of the process (kill -9) loses nothing that
  ``put`` returned. ``sync(keys)`` makes objects durable: the filesystem
  fsyncs their files and directories, S3 is durable when the PUT returns (a
  no-op). Callers put every object of one step, then sync them once, then
  record the step (an upload's committed offset).
* ``get`` returns the object's bytes as a read-only buffer (``bytes`` or a
  ``memoryview`` over the store's own copy, no second copy); ``bytes(...)`` it to
  keep a plain copy. ``get(key, length)`` reads at most ``length`` bytes in one
  call (obstore's whole-object get is two: its metadata, then its body), for
  callers that know the object's length. A missing key raises ``BlobNotFound``;
  ``delete`` of one is not an error.
* ``list`` is by key prefix, not by directory: ``"acme/a1"`` also matches
  ``"acme/a10/…"``. End prefixes with ``/``.
* Keys are ``/``-separated, without a leading ``/``; segments are ids (no
  ``..``). Objects are small (one chunk); nothing here streams.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


class BlobNotFound(KeyError):
    """No object under this key."""


class BlobStoreUnavailable(Exception):
    """The object store cannot be reached or refused the operation."""


@runtime_checkable
class BlobStore(Protocol):
    """Small named objects. See the module docs."""

    async def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` under ``key``, replacing any object there, atomically."""
        ...

    async def sync(self, keys: Sequence[str]) -> None:
        """Make these objects (already ``put``) durable against power loss, with their names; ``BlobNotFound`` if
        one was deleted since it was put."""
        ...

    async def get(self, key: str, length: int | None = None) -> bytes | memoryview:
        """The object's bytes (a read-only buffer, not copied); ``BlobNotFound`` if there is none.

        With ``length`` (at least 1), at most its first ``length`` bytes, read in one call: for a caller that knows
        how long the object should be (a sealed chunk). A shorter object comes back whole, so the caller
        still sees a wrong length.
        """
        ...

    async def delete(self, keys: Sequence[str]) -> None:
        """Delete these objects; missing ones are ignored."""
        ...

    async def list(self, prefix: str) -> list[str]:
        """Every key starting with ``prefix``, sorted."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
