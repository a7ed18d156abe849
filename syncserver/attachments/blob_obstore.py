"""``ObstoreBlobStore``: the ``BlobStore`` over any obstore ``ObjectStore`` (shared by the fs and S3 backends)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import obstore
from obstore.exceptions import NotFoundError

from syncserver.attachments.blobstore import BlobNotFound, BlobStoreUnavailable


class ObstoreBlobStore:
    """Maps ``BlobStore`` calls to obstore; subclasses only build the store."""

    def __init__(self, store: Any) -> None:
        self._store = store

    @property
    def store(self) -> Any:
        return self._store

    async def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        try:
            await obstore.put_async(self.store, key, data, use_multipart=False)
        except OSError as exc:
            raise BlobStoreUnavailable(str(exc)) from exc

    async def sync(self, keys: Sequence[str]) -> None:
        """Nothing to do: S3 has the object durably when its PUT returns (the filesystem store overrides this)."""
        return None

    async def get(self, key: str, length: int | None = None) -> memoryview:
        try:
            # A view of obstore's buffer: copying a chunk into ``bytes`` cost as much as reading it.
            if length is not None:
                # One request (a ranged read) instead of a get and then its body: two hops between
                # obstore's runtime and the event loop become one (340 to 275 µs for a 2 MiB photo's
                # two chunks, read concurrently, in a download).
                return memoryview(await obstore.get_range_async(self.store, key, start=0, length=length))
            result = await obstore.get_async(self.store, key)
            return memoryview(await result.bytes_async())
        except (NotFoundError, FileNotFoundError) as exc:
            raise BlobNotFound(key) from exc

    async def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            try:
                await obstore.delete_async(self.store, key)
            except (NotFoundError, FileNotFoundError):
                continue

    async def list(self, prefix: str) -> list[str]:
        found: list[str] = []
        try:
            async for batch in obstore.list(self.store, prefix=prefix.rstrip("/") or None):
                found.extend(str(meta["path"]) for meta in batch)
        except (NotFoundError, FileNotFoundError):
            return []
        return sorted(k for k in found if k.startswith(prefix))

    async def close(self) -> None:
        return None
