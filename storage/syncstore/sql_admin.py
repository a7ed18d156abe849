"""``SqlAdmin``: the ``AdminStore`` part of ``SqlStore`` (see ``adminstore.py``).

Reads use the same pooled connections as ``SqlStore``; each write is one short
transaction of its own. None takes the tenant lock: status changes are single
compare-and-set ``UPDATE``s, which the database serializes on the row.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, insert, or_, select, update

from syncstore import rows, sql_log
from syncstore.adminstore import (
    AuditRecord,
    ConflictOverride,
    ConflictQuery,
    DeadLetterKey,
    DeadLetterQuery,
)
from syncstore.records import ChangeRecord, ConflictRecord, DeadLetterRecord, ReplicaRecord
from syncstore.sql_database import SqlDatabase
from syncstore.tables import audit_log, changes, conflict_overrides, conflicts, dead_letters, replicas


class SqlAdmin:
    """The ``AdminStore`` part of ``SqlStore``, over the store's shared ``SqlDatabase``."""

    def __init__(self, db: SqlDatabase) -> None:
        self._db = db

    async def find_conflicts(
        self, tenant_id: str, after: tuple[int, int] | None, limit: int, query: ConflictQuery
    ) -> list[ConflictRecord]:
        """See ``AdminStore.find_conflicts``."""
        if limit <= 0:
            return []
        where: list[ColumnElement[bool]] = [conflicts.c.tenant_id == tenant_id]
        if after is not None:
            seq, idx = after
            where.append(or_(conflicts.c.seq > seq, and_(conflicts.c.seq == seq, conflicts.c.idx > idx)))
        for name in ("collection", "entity_id", "field", "kind", "status"):
            value = getattr(query, name)
            if value is not None:
                where.append(conflicts.c[name] == value)
        where += _time_range(conflicts.c.created_at, query.since_ms, query.until_ms)
        stmt = select(conflicts).where(*where).order_by(conflicts.c.seq, conflicts.c.idx).limit(limit)
        return [rows.conflict_from_row(row) for row in await self._db.rows(stmt)]

    async def record_override(self, tenant_id: str, override: ConflictOverride) -> bool:
        """See ``AdminStore.record_override``: one transaction, status and override row together."""
        key = (
            conflicts.c.tenant_id == tenant_id,
            conflicts.c.seq == override.seq,
            conflicts.c.idx == override.idx,
        )
        values = {
            "tenant_id": tenant_id,
            "seq": override.seq,
            "idx": override.idx,
            "actor": override.actor,
            "change_seq": override.change_seq,
            "created_at": override.created_at,
        }
        async with self._db.connect(write=True) as conn:
            found = await conn.execute(update(conflicts).where(*key).values(status="overridden"))
            if found.rowcount == 0:
                await conn.rollback()
                return False
            where = (
                conflict_overrides.c.tenant_id == tenant_id,
                conflict_overrides.c.seq == override.seq,
                conflict_overrides.c.idx == override.idx,
            )
            replaced = await conn.execute(update(conflict_overrides).where(*where).values(values))
            if replaced.rowcount == 0:
                await conn.execute(insert(conflict_overrides).values(values))
            await conn.commit()
        return True

    async def conflict_override(self, tenant_id: str, seq: int, idx: int) -> ConflictOverride | None:
        stmt = select(conflict_overrides).where(
            conflict_overrides.c.tenant_id == tenant_id,
            conflict_overrides.c.seq == seq,
            conflict_overrides.c.idx == idx,
        )
        found = await self._db.rows(stmt)
        if not found:
            return None
        row = found[0]
        return ConflictOverride(row["seq"], row["idx"], row["actor"], row["change_seq"], row["created_at"])

    async def find_dead_letters(
        self, tenant_id: str, before: DeadLetterKey | None, limit: int, query: DeadLetterQuery
    ) -> list[DeadLetterRecord]:
        """See ``AdminStore.find_dead_letters``."""
        if limit <= 0:
            return []
        d = dead_letters.c
        where: list[ColumnElement[bool]] = [d.tenant_id == tenant_id]
        if before is not None:
            at, replica_id, n = before
            where.append(
                or_(
                    d.created_at < at,
                    and_(d.created_at == at, d.replica_id < replica_id),
                    and_(d.created_at == at, d.replica_id == replica_id, d.n < n),
                )
            )
        for name, column in (
            ("status", d.status),
            ("code", d.code),
            ("replica_id", d.replica_id),
            ("user", d.user_sub),
            ("collection", d.collection),
            ("entity_id", d.entity_id),
        ):
            value = getattr(query, name)
            if value is not None:
                where.append(column == value)
        where += _time_range(d.created_at, query.since_ms, query.until_ms)
        stmt = select(dead_letters).where(*where).order_by(d.created_at.desc(), d.replica_id.desc(), d.n.desc())
        return [rows.dead_letter_from_row(row) for row in await self._db.rows(stmt.limit(limit))]

    async def get_dead_letter(self, tenant_id: str, replica_id: str, n: int) -> DeadLetterRecord | None:
        stmt = select(dead_letters).where(
            dead_letters.c.tenant_id == tenant_id, dead_letters.c.replica_id == replica_id, dead_letters.c.n == n
        )
        found = await self._db.rows(stmt)
        return rows.dead_letter_from_row(found[0]) if found else None

    async def set_dead_letter_status(
        self, tenant_id: str, replica_id: str, n: int, expected: str, status: str, audit: AuditRecord | None = None
    ) -> bool:
        """See ``AdminStore.set_dead_letter_status``: the ``UPDATE`` and the audit row in one transaction."""
        stmt = (
            update(dead_letters)
            .where(
                dead_letters.c.tenant_id == tenant_id,
                dead_letters.c.replica_id == replica_id,
                dead_letters.c.n == n,
                dead_letters.c.status == expected,
            )
            .values(status=status)
        )
        async with self._db.connect(write=True) as conn:
            changed = (await conn.execute(stmt)).rowcount == 1
            if changed and audit is not None:
                await conn.execute(insert(audit_log).values(_audit_values(audit)))
            await conn.commit()
        return changed

    async def change_at(self, tenant_id: str, replica_id: str, n: int) -> ChangeRecord | None:
        stmt = sql_log.select_changes(tenant_id).where(sql_log.replica_name == replica_id, changes.c.n == n)
        found = await self._db.rows(stmt)
        return rows.change_from_row(found[0]) if found else None

    async def get_replica(self, tenant_id: str, replica_id: str) -> ReplicaRecord | None:
        stmt = select(replicas).where(replicas.c.tenant_id == tenant_id, replicas.c.replica_id == replica_id)
        found = await self._db.rows(stmt)
        return rows.replica_from_row(found[0]) if found else None

    async def append_audit(self, entry: AuditRecord) -> int:
        """See ``AdminStore.append_audit``."""
        async with self._db.connect(write=True) as conn:
            result = await conn.execute(insert(audit_log).values(_audit_values(entry)))
            await conn.commit()
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    async def audit_log(
        self, tenant_id: str | None, before_id: int | None, limit: int, target: str | None = None
    ) -> list[AuditRecord]:
        """See ``AdminStore.audit_log``."""
        if limit <= 0:
            return []
        a = audit_log.c
        where: list[ColumnElement[bool]] = [a.tenant_id.is_(None) if tenant_id is None else a.tenant_id == tenant_id]
        if before_id is not None:
            where.append(a.id < before_id)
        if target is not None:
            where.append(a.target == target)
        stmt = select(audit_log).where(*where).order_by(a.id.desc()).limit(limit)
        return [
            AuditRecord(
                id=row["id"],
                tenant_id=row["tenant_id"],
                actor=row["actor"],
                action=row["action"],
                target=row["target"],
                details=row["details"],
                created_at=row["created_at"],
            )
            for row in await self._db.rows(stmt)
        ]


def _audit_values(entry: AuditRecord) -> dict[str, Any]:
    """An ``audit_log`` row's values; its id is the database's."""
    return {
        "tenant_id": entry.tenant_id,
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "details": entry.details,
        "created_at": entry.created_at,
    }


def _time_range(column: Any, since_ms: int | None, until_ms: int | None) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if since_ms is not None:
        where.append(column >= since_ms)
    if until_ms is not None:
        where.append(column < until_ms)
    return where
