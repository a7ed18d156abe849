"""``MemoryAttachmentStore``: attachment metadata in dicts, for tests and ``memory://``."""

from __future__ import annotations

from collections.abc import Sequence

from msgspec.structs import replace

from syncstore.attachments import AttachmentRecord, AttachmentRefRecord, AttachmentState


class MemoryAttachmentStore:
    """Same contract as ``SqlAttachmentStore``; nothing survives the process."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], AttachmentRecord] = {}
        self._refs: dict[tuple[str, str], dict[tuple[str, str], int]] = {}

    async def get_attachment(self, tenant_id: str, attachment_id: str) -> AttachmentRecord | None:
        return self._rows.get((tenant_id, attachment_id))

    async def attachment_states(self, tenant_id: str, ids: Sequence[str]) -> dict[str, AttachmentState]:
        found = (self._rows.get((tenant_id, i)) for i in ids)
        return {r.id: r.state for r in found if r is not None}

    async def create_attachment(self, record: AttachmentRecord) -> AttachmentRecord:
        return self._rows.setdefault((record.tenant_id, record.id), record)

    async def update_attachment(self, old: AttachmentRecord, new: AttachmentRecord) -> bool:
        key = (old.tenant_id, old.id)
        now = self._rows.get(key)
        if now is None or (now.state, now.upload_offset, now.key_version, now.chunk_tokens, now.created_at) != (
            old.state,
            old.upload_offset,
            old.key_version,
            old.chunk_tokens,
            old.created_at,
        ):
            return False
        self._rows[key] = new
        return True

    async def delete_attachment(self, tenant_id: str, attachment_id: str) -> bool:
        self._refs.pop((tenant_id, attachment_id), None)
        return self._rows.pop((tenant_id, attachment_id), None) is not None

    async def find_blob(self, tenant_id: str, mac: str) -> AttachmentRecord | None:
        for (t, _), row in sorted(self._rows.items()):
            if t == tenant_id and row.mac == mac and row.state == "available" and row.blob_owner == row.id:
                return row
        return None

    async def blob_users(self, tenant_id: str, owner: str, key_version: int | None = None) -> int:
        return sum(
            1
            for (t, _), r in self._rows.items()
            if t == tenant_id and r.blob_owner == owner and key_version in (None, r.key_version)
        )

    async def list_attachments(
        self, tenant_id: str, *, state: AttachmentState | None = None, after: str | None = None, limit: int = 1000
    ) -> list[AttachmentRecord]:
        rows = [
            r
            for (t, i), r in sorted(self._rows.items())
            if t == tenant_id and (state is None or r.state == state) and (after is None or i > after)
        ]
        return rows[:limit]

    async def add_refs(self, tenant_id: str, refs: Sequence[AttachmentRefRecord], now_ms: int) -> None:
        for ref in refs:
            self._refs.setdefault((tenant_id, ref.attachment_id), {})[(ref.collection, ref.entity_id)] = now_ms

    async def refs(self, tenant_id: str, attachment_id: str) -> list[AttachmentRefRecord]:
        found = self._refs.get((tenant_id, attachment_id), {})
        return [AttachmentRefRecord(attachment_id, c, e) for c, e in sorted(found)]

    async def refs_of(self, tenant_id: str, ids: Sequence[str]) -> list[AttachmentRefRecord]:
        return [ref for i in sorted(set(ids)) for ref in await self.refs(tenant_id, i)]

    async def mark_referenced(self, tenant_id: str, ids: Sequence[str], now_ms: int) -> None:
        for i in ids:
            row = self._rows.get((tenant_id, i))
            if row is not None:
                self._rows[(tenant_id, i)] = replace(row, referenced_at=now_ms)
