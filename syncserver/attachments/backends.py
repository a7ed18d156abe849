"""Choosing the blob store: ``SYNC_BLOB_URL`` = ``file:///path`` (default ``<data dir>/blobs``) or ``s3://bucket``."""

from __future__ import annotations

from pathlib import Path

from syncserver.attachments.blob_fs import FilesystemBlobStore
from syncserver.attachments.blobstore import BlobStore
from syncserver.attachments.settings import AttachmentSettings


def open_blob_store(settings: AttachmentSettings, data_dir: Path) -> BlobStore:
    url = settings.blob_url
    if url is None or url.startswith("file://"):
        return FilesystemBlobStore(settings.blob_root(data_dir))
    if url.startswith("s3://"):
        from syncserver.attachments.blob_s3 import S3BlobStore  # only S3 deployments build the client

        bucket = url.removeprefix("s3://").strip("/")
        return S3BlobStore(bucket, endpoint=settings.s3_endpoint, region=settings.s3_region)
    if url.startswith("memory://"):
        from obstore.store import MemoryStore

        from syncserver.attachments.blob_obstore import ObstoreBlobStore

        return ObstoreBlobStore(MemoryStore())
    raise ValueError(f"unsupported SYNC_BLOB_URL {url!r}: use file:///path, s3://bucket or memory://")
