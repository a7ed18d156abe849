"""``FilesystemBlobStore``: blobs as files under a directory (the default: ``<data dir>/blobs``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from obstore.store import LocalStore

from syncserver.attachments.blob_obstore import ObstoreBlobStore
from syncserver.attachments.blobstore import BlobNotFound


class FilesystemBlobStore(ObstoreBlobStore):
    """Objects are files; a put writes a temporary file and renames it (atomic), ``sync`` fsyncs.

    The directory is created on first use, so a server that never sees an attachment leaves no trace.
    """

    def __init__(self, root: Path) -> None:
        super().__init__(None)
        self.root = root

    @property
    def store(self) -> Any:
        if self._store is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._store = LocalStore(prefix=self.root.resolve(), automatic_cleanup=True)
        return self._store

    async def sync(self, keys: Sequence[str]) -> None:
        """fsync each file and each directory on the way up to the root (renames and new directories).

        Called once per PATCH for every object it wrote, not per put. The fsyncs run concurrently: the
        filesystem's journal commits them together (on ext4 about one disk flush for the batch, where
        one after another cost one each).
        """
        if keys:
            try:
                await asyncio.gather(*(asyncio.to_thread(_fsync, path) for path in self.synced_paths(keys)))
            except FileNotFoundError as exc:  # deleted since it was put (another process's upload moved on)
                raise BlobNotFound(str(exc.filename)) from exc

    def synced_paths(self, keys: Sequence[str]) -> list[Path]:
        """The files of ``keys`` and their directories up to the root, each once."""
        root = self.root.resolve()
        files = [root / key for key in keys]
        directories = {root} | {d for f in files for d in f.parents if d.is_relative_to(root)}
        return [*dict.fromkeys(files), *sorted(directories)]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
