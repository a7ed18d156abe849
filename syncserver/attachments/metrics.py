"""Attachment metrics (prometheus-client default registry, served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

BYTES_STORED = Counter(
    "sync_attachment_bytes_stored",
    "Plaintext bytes of attachments verified and stored (deduplicated content counts once).",
)
UPLOADS_IN_PROGRESS = Gauge(
    "sync_attachment_uploads_in_progress", "tus PATCH requests being received now.", multiprocess_mode="livesum"
)
UPLOADS_FAILED = Counter("sync_attachment_uploads_failed", "Uploads refused (dead letters), by code.", ["code"])
INTEGRITY_FAILURES = Counter(
    "sync_attachment_integrity_failures", "Stored chunks that failed to open (tampering or damage)."
)
