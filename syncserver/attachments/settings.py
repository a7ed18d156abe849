"""Attachment settings, read from ``SYNC_ATTACHMENT_*`` and ``SYNC_BLOB_*`` environment variables."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MEDIA_TYPES = ("image/*", "application/pdf")


@dataclass(frozen=True)
class AttachmentSettings:
    max_bytes: int = 50 * 1024 * 1024
    """Largest attachment accepted (tus ``Tus-Max-Size``); larger ones are refused (``attachment_too_large``)."""
    media_types: tuple[str, ...] = DEFAULT_MEDIA_TYPES
    """Allowed media types; ``*`` patterns allowed (``image/*``); others are refused (``media_type_not_allowed``)."""
    chunk_bytes: int = 1024 * 1024
    """Plaintext bytes per sealed chunk: the unit of encryption, of object writes and of memory per upload.

    Each row records the size it was stored with, so changing this never affects stored attachments."""
    upload_expiry_s: int = 24 * 3600
    """An unfinished upload is abandoned this long after its last PATCH (tus expiration); GC removes it."""
    retention_s: int = 30 * 24 * 3600
    """An attachment no live value or sibling referenced for this long is deleted by GC."""
    blob_url: str | None = None
    """``file:///path`` (default: ``<data dir>/blobs``) or ``s3://bucket``."""
    s3_endpoint: str | None = None
    s3_region: str | None = None

    def allows(self, media_type: str) -> bool:
        return any(fnmatch.fnmatchcase(media_type, pattern) for pattern in self.media_types)

    def blob_root(self, data_dir: Path) -> Path:
        if self.blob_url and self.blob_url.startswith("file://"):
            return Path(self.blob_url.removeprefix("file://"))
        return data_dir / "blobs"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AttachmentSettings:
        def num(name: str, default: int) -> int:
            raw = env.get(name)
            try:
                return int(raw) if raw else default
            except ValueError as exc:
                raise ValueError(f"{name} must be an integer, got {raw!r}") from exc

        types = env.get("SYNC_ATTACHMENT_MEDIA_TYPES")
        return cls(
            max_bytes=num("SYNC_ATTACHMENT_MAX_BYTES", cls.max_bytes),
            media_types=tuple(t.strip() for t in types.split(",") if t.strip()) if types else DEFAULT_MEDIA_TYPES,
            chunk_bytes=num("SYNC_ATTACHMENT_CHUNK_BYTES", cls.chunk_bytes),
            upload_expiry_s=num("SYNC_ATTACHMENT_UPLOAD_EXPIRY_S", cls.upload_expiry_s),
            retention_s=num("SYNC_ATTACHMENT_RETENTION_S", cls.retention_s),
            blob_url=env.get("SYNC_BLOB_URL") or None,
            s3_endpoint=env.get("SYNC_BLOB_S3_ENDPOINT") or None,
            s3_region=env.get("SYNC_BLOB_S3_REGION") or None,
        )
