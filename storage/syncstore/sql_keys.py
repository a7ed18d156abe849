"""``SqlKeys``: the ``KeyStore`` part of ``SqlStore`` (see ``keystore.py``).

Each write is one short transaction. Adding a key and erasing a tenant take the
tenant lock (they must not interleave with a push); re-encryption and rewrapping
do not: their writes are compare-and-set, which the database serializes per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, Table, bindparam, func, insert, select, tuple_, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from syncstore import rows, sql_log
from syncstore.keystore import (
    CHECKPOINTS,
    NAME_COLUMNS,
    SEALED_COLUMN,
    SEALED_TABLES,
    KeyPart,
    Remac,
    Resealed,
    SealedRow,
    SealedTable,
)
from syncstore.records import ChangeRecord, CheckpointRecord, WrappedKey
from syncstore.sql_database import SqlDatabase
from syncstore.tables import (
    audit_log,
    chain_checkpoints,
    changes,
    conflicts,
    dead_letters,
    entities,
    metadata,
    tenant_keys,
    tenants,
)

_TABLES: dict[SealedTable, Table] = {
    "entities": entities,
    "changes": changes,
    "conflicts": conflicts,
    "dead_letters": dead_letters,
}


class SqlKeys:
    """The ``KeyStore`` part of ``SqlStore``, over the store's shared ``SqlDatabase``."""

    def __init__(self, db: SqlDatabase) -> None:
        self._db = db

    async def add_tenant_key(self, key: WrappedKey) -> None:
        """See ``KeyStore.add_tenant_key``."""
        async with self._db.locked(key.tenant_id) as locked:
            await locked.conn.execute(
                update(tenant_keys)
                .where(tenant_keys.c.tenant_id == key.tenant_id, tenant_keys.c.state == "active")
                .values(state="retired")
            )
            try:
                await locked.conn.execute(insert(tenant_keys).values(rows.key_to_row(key)))
            except IntegrityError as exc:
                raise ValueError(f"tenant {key.tenant_id!r} already has key version {key.version}") from exc
            await locked.conn.commit()

    async def rewrap_tenant_key(self, key: WrappedKey, wrapped: bytes, master_key_id: str) -> bool:
        """See ``KeyStore.rewrap_tenant_key``."""
        async with self._db.connect(write=True) as conn:
            result = await conn.execute(
                update(tenant_keys)
                .where(
                    tenant_keys.c.tenant_id == key.tenant_id,
                    tenant_keys.c.version == key.version,
                    tenant_keys.c.wrapped == key.wrapped,
                )
                .values(wrapped=wrapped, master_key_id=master_key_id)
            )
            await conn.commit()
            return bool(result.rowcount)

    async def destroy_tenant_keys(self, tenant_id: str, versions: Sequence[int] | None = None) -> int:
        """See ``KeyStore.destroy_tenant_keys``. On SQLite the old bytes are zeroed and the WAL truncated."""
        query = update(tenant_keys).where(tenant_keys.c.tenant_id == tenant_id, tenant_keys.c.state != "destroyed")
        if versions is not None:
            query = query.where(tenant_keys.c.version.in_(sorted(set(versions))))
        async with self._db.connect(write=True) as conn:
            if self._db.sqlite:
                await conn.exec_driver_sql("PRAGMA secure_delete=ON")
            result = await conn.execute(query.values(wrapped=b"", state="destroyed", dictionary=None))
            await conn.commit()
            if self._db.sqlite:
                await conn.exec_driver_sql("PRAGMA secure_delete=OFF")
                await conn.commit()
        if self._db.sqlite:
            await self._checkpoint()
        return int(result.rowcount)

    async def key_usage(self, tenant_id: str) -> dict[str, dict[int, int]]:
        """See ``KeyStore.key_usage``."""
        usage: dict[str, dict[int, int]] = {}
        for name in SEALED_TABLES:
            table = _TABLES[name]
            query = (
                select(table.c.key_version, func.count().label("rows"))
                .where(sql_log.of_tenant(table, tenant_id))
                .group_by(table.c.key_version)
            )
            usage[name] = {row["key_version"]: row["rows"] for row in await self._db.rows(query)}
        marks = chain_checkpoints
        query = (
            select(marks.c.key_version, func.count().label("rows"))
            .where(marks.c.tenant_id == tenant_id)
            .group_by(marks.c.key_version)
        )
        usage[CHECKPOINTS] = {row["key_version"]: row["rows"] for row in await self._db.rows(query)}
        return usage

    async def checkpoint_macs(
        self, tenant_id: str, *, not_version: int, after: int | None, limit: int
    ) -> list[CheckpointRecord]:
        """See ``KeyStore.checkpoint_macs``: keyset pagination on ``(tenant_id, seq)``."""
        if limit <= 0:
            return []
        marks = chain_checkpoints
        query = select(marks).where(marks.c.tenant_id == tenant_id, marks.c.key_version != not_version)
        if after is not None:
            query = query.where(marks.c.seq > after)
        query = query.order_by(marks.c.seq).limit(limit)
        return [rows.checkpoint_from_row(row) for row in await self._db.rows(query)]

    async def remac_checkpoints(self, tenant_id: str, rows_: Sequence[Remac]) -> int:
        """See ``KeyStore.remac_checkpoints``: one compare-and-set ``UPDATE`` per checkpoint, one transaction."""
        if not rows_:
            return 0
        marks = chain_checkpoints
        query = (
            update(marks)
            .where(
                marks.c.tenant_id == bindparam("b_tenant"),
                marks.c.seq == bindparam("b_seq"),
                marks.c.key_version == bindparam("b_old_version"),
                marks.c.mac == bindparam("b_old_mac"),
            )
            .values(mac=bindparam("b_mac"), key_version=bindparam("b_version"))
        )
        done = 0
        async with self._db.connect(write=True) as conn:
            for row in rows_:
                params = {
                    "b_tenant": tenant_id,
                    "b_seq": row.seq,
                    "b_old_version": row.old_version,
                    "b_old_mac": row.old_mac,
                    "b_mac": row.mac,
                    "b_version": row.key_version,
                }
                done += (await conn.execute(query, params)).rowcount
            await conn.commit()
        return done

    async def sealed_rows(
        self, tenant_id: str, table: SealedTable, *, not_version: int, after: tuple[KeyPart, ...] | None, limit: int
    ) -> list[SealedRow]:
        """See ``KeyStore.sealed_rows``: keyset pagination on the primary key."""
        if limit <= 0:
            return []
        t = _TABLES[table]
        key = _key_columns(t)
        names = [t.c[n] for n in NAME_COLUMNS[table]]
        query = select(*dict.fromkeys([*key, *names]), t.c.key_version, t.c[SEALED_COLUMN[table]].label("blob"))
        query = query.where(sql_log.of_tenant(t, tenant_id), t.c.key_version != not_version)
        if after is not None:
            query = query.where(tuple_(*key) > tuple_(*after))
        query = query.order_by(*key).limit(limit)
        return [
            SealedRow(
                table=table,
                key=tuple(row[c.name] for c in key),
                names={c.name: row[c.name] for c in names},
                key_version=row["key_version"],
                blob=bytes(row["blob"]),
            )
            for row in await self._db.rows(query)
        ]

    async def reseal(self, tenant_id: str, table: SealedTable, rows_: Sequence[Resealed]) -> int:
        """See ``KeyStore.reseal``: one compare-and-set ``UPDATE`` per cell, one transaction."""
        if not rows_:
            return 0
        t = _TABLES[table]
        key = _key_columns(t)
        blob = t.c[SEALED_COLUMN[table]]
        query = (
            update(t)
            .where(
                sql_log.of_tenant(t, bindparam("b_tenant")),
                *(c == bindparam(f"b_key{i}") for i, c in enumerate(key)),
                t.c.key_version == bindparam("b_old_version"),
                blob == bindparam("b_old_blob"),
            )
            .values({blob.name: bindparam("b_blob"), "key_version": bindparam("b_version")})
        )
        done = 0
        async with self._db.connect(write=True) as conn:
            for row in rows_:
                params: dict[str, Any] = {f"b_key{i}": part for i, part in enumerate(row.key)}
                params.update(
                    b_tenant=tenant_id,
                    b_old_version=row.old_version,
                    b_old_blob=row.old_blob,
                    b_blob=row.blob,
                    b_version=row.key_version,
                )
                done += (await conn.execute(query, params)).rowcount
            await conn.commit()
        return done

    async def erase_tenant(self, tenant_id: str) -> dict[str, int]:
        """See ``KeyStore.erase_tenant``: children first, the ``tenants`` row last, under the tenant lock."""
        if not await self._db.rows(select(tenants.c.id).where(tenants.c.id == tenant_id)):
            return {}
        deleted: dict[str, int] = {}
        async with self._db.locked(tenant_id) as locked:
            for table in reversed(metadata.sorted_tables):
                if table is tenants or table is audit_log or not {"tenant_id", "tenant_no"} & set(table.c.keys()):
                    continue
                result = await locked.conn.execute(table.delete().where(sql_log.of_tenant(table, tenant_id)))
                deleted[table.name] = int(result.rowcount)
            result = await locked.conn.execute(tenants.delete().where(tenants.c.id == tenant_id))
            deleted[tenants.name] = int(result.rowcount)
            await locked.conn.commit()
        return deleted

    async def changes_by_user(self, tenant_id: str, user: str, after_seq: int, limit: int) -> list[ChangeRecord]:
        """See ``KeyStore.changes_by_user`` (uses ``ix_changes_tenant_user_seq``)."""
        if limit <= 0:
            return []
        query = (
            sql_log.select_changes(tenant_id)
            .where(sql_log.user_name == user, changes.c.seq > after_seq)
            .order_by(changes.c.seq)
            .limit(limit)
        )
        return [rows.change_from_row(row) for row in await self._db.rows(query)]

    async def _checkpoint(self) -> None:
        """Copy the WAL into the database file and truncate it, so old page images are gone (best effort)."""

        def checkpoint(sync_conn: Connection) -> None:
            # Straight on the DB-API connection: a checkpoint cannot run inside the
            # transaction SQLAlchemy would begin (see engine.py's BEGIN handling).
            cursor = sync_conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                cursor.close()

        async with self._db.engine.connect() as conn:
            await conn.run_sync(checkpoint)


def _key_columns(table: Table) -> list[Column[Any]]:
    return [c for c in table.primary_key.columns if c.name not in ("tenant_id", "tenant_no")]
