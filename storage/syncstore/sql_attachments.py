"""``SqlAttachmentStore``: attachment metadata in the ``attachments`` and ``attachment_refs`` tables.

It shares the ``SqlStore``'s database: engine and SQLite reader (``attachment_store_for``). Each write is
one short transaction of its own; no tenant lock is taken, because attachment
rows are never written by a push: compare-and-set (``update_attachment``) is
what orders concurrent uploads of one attachment.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Connection, Executable, RowMapping, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from syncstore.attachments import AttachmentRecord, AttachmentRefRecord, AttachmentState
from syncstore.sql_database import SqlDatabase
from syncstore.tables import attachment_refs, attachments

_ONE = select(attachments).where(
    attachments.c.tenant_id == bindparam("tenant_id"), attachments.c.id == bindparam("attachment_id")
)
"""One attachment row: built once, so each download skips building the statement (SQLAlchemy caches its SQL)."""
_FIELDS = [c for c in AttachmentRecord.__struct_fields__ if c not in ("upload_offset",)]


def _to_row(record: AttachmentRecord) -> dict[str, Any]:
    row = {f: getattr(record, f) for f in _FIELDS}
    row["upload_offset"] = record.upload_offset
    return row


def _statements(*statements: Executable) -> Callable[[Connection], int]:
    """A write step (``SqlDatabase.write``) that runs ``statements`` in order; it returns the last one's row
    count."""

    def run(conn: Connection) -> int:
        count = 0
        for statement in statements:
            count = int(conn.execute(statement).rowcount)
        return count

    return run


def _from_row(row: RowMapping) -> AttachmentRecord:
    return AttachmentRecord(**{f: row[f] for f in AttachmentRecord.__struct_fields__})


class SqlAttachmentStore:
    """The ``AttachmentStore`` on SQLite or PostgreSQL."""

    def __init__(self, db: SqlDatabase) -> None:
        self._db = db

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        async with self._db.connect(write=True) as conn:
            try:
                yield conn
                await conn.commit()
            finally:
                if conn.in_transaction():
                    await conn.rollback()

    async def _rows(self, query: Any, params: dict[str, Any] | None = None) -> Sequence[RowMapping]:
        return await self._db.rows(query, params)

    async def get_attachment(self, tenant_id: str, attachment_id: str) -> AttachmentRecord | None:
        found = await self._rows(_ONE, {"tenant_id": tenant_id, "attachment_id": attachment_id})
        return _from_row(found[0]) if found else None

    async def attachment_states(self, tenant_id: str, ids: Sequence[str]) -> dict[str, AttachmentState]:
        if not ids:
            return {}
        a = attachments.c
        found = await self._rows(select(a.id, a.state).where(a.tenant_id == tenant_id, a.id.in_(sorted(set(ids)))))
        return {row["id"]: row["state"] for row in found}

    async def create_attachment(self, record: AttachmentRecord) -> AttachmentRecord:
        try:
            await self._db.write(_statements(insert(attachments).values(_to_row(record))))
            return record  # stored as given: no read back
        except IntegrityError:
            pass  # created by an earlier (retried) request, or no such tenant: hand back what is stored
        stored = await self.get_attachment(record.tenant_id, record.id)
        if stored is None:  # the tenant does not exist (foreign key)
            raise LookupError(f"no tenant {record.tenant_id!r}")
        return stored

    async def update_attachment(self, old: AttachmentRecord, new: AttachmentRecord) -> bool:
        a = attachments.c
        query = (
            update(attachments)
            .where(
                a.tenant_id == old.tenant_id,
                a.id == old.id,
                a.state == old.state,
                a.upload_offset == old.upload_offset,
                a.key_version == old.key_version,
                a.chunk_tokens.is_not_distinct_from(old.chunk_tokens),
                a.created_at == old.created_at,  # not a row deleted and created again under the same id
            )
            .values(_to_row(new))
        )
        return await self._db.write(_statements(query)) == 1

    async def delete_attachment(self, tenant_id: str, attachment_id: str) -> bool:
        r = attachment_refs.c
        a = attachments.c
        refs = delete(attachment_refs).where(r.tenant_id == tenant_id, r.attachment_id == attachment_id)
        row = delete(attachments).where(a.tenant_id == tenant_id, a.id == attachment_id)
        return await self._db.write(_statements(refs, row)) == 1

    async def find_blob(self, tenant_id: str, mac: str) -> AttachmentRecord | None:
        a = attachments.c
        query = (
            select(attachments)
            .where(a.tenant_id == tenant_id, a.mac == mac, a.state == "available", a.blob_owner == a.id)
            .order_by(a.id)
            .limit(1)
        )
        found = await self._rows(query)
        return _from_row(found[0]) if found else None

    async def blob_users(self, tenant_id: str, owner: str, key_version: int | None = None) -> int:
        a = attachments.c
        query = select(func.count().label("n")).where(a.tenant_id == tenant_id, a.blob_owner == owner)
        if key_version is not None:
            query = query.where(a.key_version == key_version)
        found = await self._rows(query)
        return int(found[0]["n"]) if found else 0

    async def list_attachments(
        self, tenant_id: str, *, state: AttachmentState | None = None, after: str | None = None, limit: int = 1000
    ) -> list[AttachmentRecord]:
        a = attachments.c
        query = select(attachments).where(a.tenant_id == tenant_id)
        if state is not None:
            query = query.where(a.state == state)
        if after is not None:
            query = query.where(a.id > after)
        return [_from_row(row) for row in await self._rows(query.order_by(a.id).limit(limit))]

    async def add_refs(self, tenant_id: str, refs: Sequence[AttachmentRefRecord], now_ms: int) -> None:
        r = attachment_refs.c
        for ref in sorted(set(refs), key=lambda x: (x.attachment_id, x.collection, x.entity_id)):
            key = (
                r.tenant_id == tenant_id,
                r.attachment_id == ref.attachment_id,
                r.collection == ref.collection,
                r.entity_id == ref.entity_id,
            )
            async with self._write() as conn:
                result = await conn.execute(update(attachment_refs).where(*key).values(seen_at=now_ms))
                if int(result.rowcount) == 0:
                    try:
                        async with conn.begin_nested():
                            await conn.execute(
                                insert(attachment_refs).values(
                                    tenant_id=tenant_id,
                                    attachment_id=ref.attachment_id,
                                    collection=ref.collection,
                                    entity_id=ref.entity_id,
                                    seen_at=now_ms,
                                )
                            )
                    except IntegrityError:
                        pass  # inserted concurrently: it exists, which is all we need

    async def refs(self, tenant_id: str, attachment_id: str) -> list[AttachmentRefRecord]:
        r = attachment_refs.c
        query = (
            select(r.collection, r.entity_id)
            .where(r.tenant_id == tenant_id, r.attachment_id == attachment_id)
            .order_by(r.collection, r.entity_id)
        )
        return [
            AttachmentRefRecord(attachment_id, row["collection"], row["entity_id"]) for row in await self._rows(query)
        ]

    async def refs_of(self, tenant_id: str, ids: Sequence[str]) -> list[AttachmentRefRecord]:
        if not ids:
            return []
        r = attachment_refs.c
        query = (
            select(r.attachment_id, r.collection, r.entity_id)
            .where(r.tenant_id == tenant_id, r.attachment_id.in_(sorted(set(ids))))
            .order_by(r.attachment_id, r.collection, r.entity_id)
        )
        return [
            AttachmentRefRecord(row["attachment_id"], row["collection"], row["entity_id"])
            for row in await self._rows(query)
        ]

    async def mark_referenced(self, tenant_id: str, ids: Sequence[str], now_ms: int) -> None:
        if not ids:
            return
        a = attachments.c
        query = update(attachments).where(a.tenant_id == tenant_id, a.id.in_(sorted(set(ids))))
        await self._db.write(_statements(query.values(referenced_at=now_ms)))
