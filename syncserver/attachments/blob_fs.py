"""``FilesystemBlobStore``: blobs as files under a directory (the default: ``<data dir>/blobs``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from obstore.store import LocalStore

from syncserver.attachments.blob_obstore import ObstoreBlobStore


class FilesystemBlobStore(ObstoreBlobStore):
    """Objects are files; a put writes a temporary file and renames it (atomic, not fsynced).

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
