"""Attachments: files (proof-of-delivery photos, signatures) referenced from register fields.

* ``blobstore`` - the ``BlobStore`` interface; ``blob_fs`` and ``blob_s3`` its backends (obstore).
* ``chunks`` - sealing bytes in fixed-size AES-256-GCM chunks bound to tenant, blob, index and "last".
* ``uploads`` - the upload state machine (offsets, verification, dedup, refusals as dead letters).
* ``tus`` - the tus 1.0 routes; ``download`` - ranged, cached, scope-checked downloads.
* ``status`` - pull and entity views annotated with each attachment's status; ``refs`` - push hook.
* ``gc`` - collection of unreferenced attachments and abandoned uploads.
"""

from __future__ import annotations

__all__: list[str] = []
