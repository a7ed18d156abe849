"""The ``AttachmentStore`` interface: upload state and the blob index of attachments.

The bytes themselves live in a blob store (``syncserver.attachments.blobstore``);
this store keeps one row per ``(tenant, attachment id)`` and, for scope checks,
which entities were written with a reference to it. ``SqlAttachmentStore``
(SQLite, PostgreSQL) and ``MemoryAttachmentStore`` implement it;
``attachment_store_for(store)`` picks the one that shares a ``Store``'s database.

Usage::

    meta = attachment_store_for(store)
    row = await meta.create_attachment(AttachmentRecord(tenant_id="acme", id="a1", ...))
    ok = await meta.update_attachment(row, replace(row, upload_offset=262144))
    await meta.add_refs("acme", [AttachmentRefRecord("a1", "deliveries", "dlv-1")], now_ms)

Pitfalls:

* ``update_attachment`` is compare-and-set on ``(state, upload_offset,
  key_version)``: it returns ``False`` when another writer moved the row first
  (a concurrent PATCH, a re-encryption); the caller re-reads and decides.
* ``create_attachment`` never overwrites: it returns the row that exists, so a
  device retrying a creation gets its first upload back.
* Rows carry no plaintext content hash: ``mac`` is a keyed hash under a tenant
  key, so equal files in two tenants look unrelated.
* ``find_blob`` only returns a row that owns its objects (``blob_owner == id``)
  and is ``available``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

from msgspec import Struct

AttachmentState = Literal["uploading", "available", "refused"]
"""``uploading``: bytes arriving (not downloadable); ``available``: verified; ``refused``: a dead letter."""


class AttachmentRecord(Struct, frozen=True, gc=False, kw_only=True):
    tenant_id: str
    id: str
    user_sub: str
    size: int
    media_type: str
    mac: str
    """Keyed hash (HMAC under a tenant key of version ``mac_version``) of the declared SHA-256."""
    mac_version: int
    key_version: int
    """The data-key version the chunks are sealed under."""
    state: AttachmentState
    upload_offset: int
    chunk_bytes: int
    blob_owner: str | None = None
    """The attachment whose objects hold the bytes (itself unless deduplicated); set once available."""
    code: str | None = None
    message: str | None = None
    created_at: int
    updated_at: int
    expires_at: int
    """An ``uploading`` row not finished by then is abandoned (tus expiration); GC removes it."""
    referenced_at: int | None = None
    """When GC last saw a live value or sibling referencing it."""
    chunk_tokens: str | None = None
    """Which PATCH's objects hold which chunks: ``"<first index>:<token>,…"`` (``syncserver.attachments.chunks``);
    ``None`` for objects named without a token (written before tokens, or re-encrypted)."""


class AttachmentRefRecord(Struct, frozen=True, gc=False):
    """An entity was written with a reference to an attachment (a hint for scope checks)."""

    attachment_id: str
    collection: str
    entity_id: str


@runtime_checkable
class AttachmentStore(Protocol):
    """Attachment metadata. See the module docs."""

    async def get_attachment(self, tenant_id: str, attachment_id: str) -> AttachmentRecord | None:
        """The row, or ``None``."""
        ...

    async def attachment_states(self, tenant_id: str, ids: Sequence[str]) -> dict[str, AttachmentState]:
        """State of each id that has a row (ids without one are absent from the result)."""
        ...

    async def create_attachment(self, record: AttachmentRecord) -> AttachmentRecord:
        """Insert ``record`` unless a row with its id exists; return the row that is stored."""
        ...

    async def update_attachment(self, old: AttachmentRecord, new: AttachmentRecord) -> bool:
        """Replace ``old`` by ``new`` iff the stored row still has ``old``'s state, offset, key version, chunk tokens
        and creation time (a row deleted and created again under the same id is another row: a PATCH that read the
        old one must not write into it)."""
        ...

    async def delete_attachment(self, tenant_id: str, attachment_id: str) -> bool:
        """Delete the row and its refs; ``False`` if there was none."""
        ...

    async def find_blob(self, tenant_id: str, mac: str) -> AttachmentRecord | None:
        """An available row owning objects whose content has this keyed hash."""
        ...

    async def blob_users(self, tenant_id: str, owner: str, key_version: int | None = None) -> int:
        """How many rows (any state) use ``owner``'s objects (only those sealed under ``key_version``, if given)."""
        ...

    async def list_attachments(
        self, tenant_id: str, *, state: AttachmentState | None = None, after: str | None = None, limit: int = 1000
    ) -> list[AttachmentRecord]:
        """Rows in id order after ``after``, optionally only in one state."""
        ...

    async def add_refs(self, tenant_id: str, refs: Sequence[AttachmentRefRecord], now_ms: int) -> None:
        """Record (or refresh) that these entities were written referencing these attachments."""
        ...

    async def refs(self, tenant_id: str, attachment_id: str) -> list[AttachmentRefRecord]:
        """Entities recorded as referencing the attachment (some may no longer do)."""
        ...

    async def refs_of(self, tenant_id: str, ids: Sequence[str]) -> list[AttachmentRefRecord]:
        """``refs`` of many attachments in one query, ordered by attachment, collection and entity.

        Ids nothing references contribute nothing; duplicate ids count once. Like ``refs``, a
        record is only a hint: the caller re-reads the entity before trusting it.
        """
        ...

    async def mark_referenced(self, tenant_id: str, ids: Sequence[str], now_ms: int) -> None:
        """Set ``referenced_at`` of these rows (GC's mark phase)."""
        ...
