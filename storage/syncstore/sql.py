"""``SqlStore``: the Store on SQLAlchemy Core, for SQLite and PostgreSQL.

The tenant lock (see ``store.py``) is taken in two layers, in process and in
the database; ``sql_database.py`` describes both. READ COMMITTED suffices on
PostgreSQL because every session read happens after the row lock is granted and
all writers take that lock first.

Pitfalls:

* The schema must exist: run ``syncstore.migrate.upgrade(url)`` first.
* ``ping`` and every method map a failure to *connect* to ``StoreUnavailable``;
  errors raised by a query on a live connection propagate unchanged.
* On SQLite another process can hold the write lock for at most
  ``busy_timeout`` (10 s) before a push fails with ``OperationalError``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from sqlalchemy import delete, func, insert, literal, select, true, tuple_, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from syncstore import rows, sql_log
from syncstore.engine import create_engine
from syncstore.facets import via
from syncstore.records import (
    ChangeRecord,
    ConflictFilter,
    ConflictRecord,
    DeadLetterRecord,
    EntityRecord,
    TenantRecord,
    WrappedKey,
)
from syncstore.sql_admin import SqlAdmin
from syncstore.sql_channels import SqlChannels, purge_channel_rows
from syncstore.sql_conflicts import conflict_page
from syncstore.sql_database import UNREACHABLE, SqlDatabase
from syncstore.sql_integrity import SqlIntegrity
from syncstore.sql_keys import SqlKeys
from syncstore.sql_session import SqlPushSession
from syncstore.store import PushSession, StoreUnavailable, TenantExists
from syncstore.tables import (
    changes,
    conflicts,
    dead_letters,
    entities,
    entity_purges,
    latest_seq_column,
    tenant_keys,
    tenants,
)


class SqlStore:
    """The Store on SQLite (``sqlite+aiosqlite:///path``) or PostgreSQL (``postgresql+psycopg://...``).

    Built from parts over one shared ``SqlDatabase``: the ``Store`` methods are
    here; ``SqlKeys``, ``SqlAdmin`` and ``SqlChannels`` hold the other
    interfaces' methods, which this class exposes as its own (``via``).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        """Wrap an engine made by ``syncstore.engine.create_engine`` (it installs the SQLite BEGIN handling)."""
        self._db = SqlDatabase(engine)
        self._keys = SqlKeys(self._db)
        self._admin = SqlAdmin(self._db)
        self._channels = SqlChannels(self._db)
        self._integrity = SqlIntegrity(self._db)

    @classmethod
    def from_url(cls, url: str | URL, **engine_kwargs: Any) -> SqlStore:
        """Build a store with its own engine. Connects lazily; ``engine_kwargs`` go to the engine."""
        return cls(create_engine(url, **engine_kwargs))

    @property
    def engine(self) -> AsyncEngine:
        return self._db.engine

    @property
    def database(self) -> SqlDatabase:
        """The engine, locks and SQLite reader this store's parts share (an attachment store shares them too)."""
        return self._db

    async def close(self) -> None:
        """Close the database's connections and threads. The store is unusable afterwards."""
        await self._db.close()

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless ``SELECT 1`` succeeds.

        On SQLite this proves the file can be opened, not that it is writable.
        """
        try:
            async with self._db.connect() as conn:
                await conn.execute(select(1))
        except UNREACHABLE as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def create_tenant(self, tenant_id: str, first_key: WrappedKey, now_ms: int) -> None:
        """Create a tenant with ``last_seq = purged_seq = 0`` and its first key.

        Raises ``TenantExists``, and ``ValueError`` if the key names another tenant.
        """
        if first_key.tenant_id != tenant_id:
            raise ValueError(f"key belongs to tenant {first_key.tenant_id!r}, not {tenant_id!r}")
        row = {"id": tenant_id, "created_at": now_ms, "last_seq": 0, "purged_seq": 0, "no": sql_log.NEXT_TENANT_NO}
        async with self._db.process_lock(tenant_id), self._db.connect(write=True) as conn:
            if not self._db.sqlite:
                # Numbering reads the highest number: creations take turns (SQLite's writes always do).
                await conn.execute(sql_log.NUMBERING_LOCK)
            try:
                await conn.execute(insert(tenants).values(row))
            except IntegrityError as exc:
                await conn.rollback()
                raise TenantExists(tenant_id) from exc
            await conn.execute(insert(tenant_keys).values(rows.key_to_row(first_key)))
            await conn.commit()

    async def get_tenant(self, tenant_id: str) -> TenantRecord | None:
        found = await self._db.rows(sql_log.TENANT_ROW, {"tenant_id": tenant_id})
        return rows.tenant_from_row(found[0]) if found else None

    async def list_tenants(self) -> list[TenantRecord]:
        """All tenants ordered by id."""
        return [rows.tenant_from_row(row) for row in await self._db.rows(select(tenants).order_by(tenants.c.id))]

    async def tenant_keys(self, tenant_id: str) -> list[WrappedKey]:
        """All data-key versions of a tenant, oldest first; empty for an unknown tenant."""
        query = select(tenant_keys).where(tenant_keys.c.tenant_id == tenant_id).order_by(tenant_keys.c.version)
        return [rows.key_from_row(row) for row in await self._db.rows(query)]

    def push_session(self, tenant_id: str) -> AbstractAsyncContextManager[PushSession]:
        """Lock the tenant until exit; see ``store.py``. Raises ``TenantNotFound`` on entry.

        Leaving the block without ``commit`` (or by an exception) rolls back.
        """
        return self._push_session(tenant_id)

    @asynccontextmanager
    async def _push_session(self, tenant_id: str) -> AsyncIterator[PushSession]:
        async with self._db.push_transaction(tenant_id) as locked:
            yield SqlPushSession(locked.step, tenant_id, locked.last_seq, locked.chain_head)

    async def pull(
        self, tenant_id: str, after_seq: int, limit: int, collections: Sequence[str] | None = None
    ) -> list[EntityRecord]:
        """Entities with ``seq > after_seq`` in seq order, at most ``limit`` (none if ``limit <= 0``).

        ``collections=None`` means all; an empty list matches nothing.
        """
        if limit <= 0 or (collections is not None and not collections):
            return []
        query = select(entities, latest_seq_column()).where(
            sql_log.of_tenant(entities, tenant_id), entities.c.seq > after_seq
        )
        if collections is not None:
            query = query.where(entities.c.collection.in_(sorted(set(collections))))
        # seq is unique per entity write; the other keys only make ties deterministic.
        query = query.order_by(entities.c.seq, entities.c.collection, entities.c.entity_id).limit(limit)
        return [rows.entity_from_row(row) for row in await self._db.rows(query)]

    async def get_entity(self, tenant_id: str, collection: str, entity_id: str) -> EntityRecord | None:
        """The entity's current row, tombstones included."""
        query = select(entities, latest_seq_column()).where(
            sql_log.of_tenant(entities, tenant_id),
            entities.c.collection == collection,
            entities.c.entity_id == entity_id,
        )
        found = await self._db.rows(query)
        return rows.entity_from_row(found[0]) if found else None

    async def changes(
        self,
        tenant_id: str,
        after_seq: int,
        limit: int,
        *,
        collection: str | None = None,
        entity_id: str | None = None,
    ) -> list[ChangeRecord]:
        """The change log after ``after_seq`` in seq order; filters combine with AND."""
        if limit <= 0:
            return []
        query = sql_log.select_changes(tenant_id).where(changes.c.seq > after_seq)
        if collection is not None:
            query = query.where(changes.c.collection == collection)
        if entity_id is not None:
            query = query.where(changes.c.entity_id == entity_id)
        query = query.order_by(changes.c.seq).limit(limit)
        return [rows.change_from_row(row) for row in await self._db.rows(query)]

    async def conflicts(
        self,
        tenant_id: str,
        after: tuple[int, int] | None,
        limit: int,
        filters: ConflictFilter | None = None,
    ) -> list[ConflictRecord]:
        """Conflicts ordered by ``(seq, idx)``, strictly after ``after``: keyset pagination.

        Pass the last row's ``(seq, idx)`` as the next page's ``after``.
        """
        if limit <= 0:
            return []
        query = conflict_page(tenant_id, after, limit, filters)
        return [rows.conflict_from_row(row) for row in await self._db.rows(query)]

    async def get_conflict(self, tenant_id: str, seq: int, idx: int) -> ConflictRecord | None:
        query = select(conflicts).where(
            conflicts.c.tenant_id == tenant_id, conflicts.c.seq == seq, conflicts.c.idx == idx
        )
        found = await self._db.rows(query)
        return rows.conflict_from_row(found[0]) if found else None

    async def dead_letters(self, tenant_id: str, limit: int, status: str | None = None) -> list[DeadLetterRecord]:
        """Dead letters newest first; ties by ``(replica_id, n)`` descending.

        Pitfall: the replica tie-break follows the database collation, which on
        PostgreSQL may differ from Python's code-point order for mixed case.
        """
        if limit <= 0:
            return []
        query = select(dead_letters).where(dead_letters.c.tenant_id == tenant_id)
        if status is not None:
            query = query.where(dead_letters.c.status == status)
        query = query.order_by(
            dead_letters.c.created_at.desc(), dead_letters.c.replica_id.desc(), dead_letters.c.n.desc()
        ).limit(limit)
        return [rows.dead_letter_from_row(row) for row in await self._db.rows(query)]

    async def purge_tombstones(self, tenant_id: str, updated_before_ms: int) -> int:
        """Delete tombstones with ``updated_at < updated_before_ms``; raise ``purged_seq`` over them.

        Holds the tenant lock, so it never races a push. Change-log rows stay.
        Raises ``TenantNotFound``.
        """
        async with self._db.locked(tenant_id) as locked:
            doomed = (
                sql_log.of_tenant(entities, tenant_id),
                entities.c.deleted == true(),
                entities.c.updated_at < updated_before_ms,
            )
            count, max_seq = (
                await locked.conn.execute(select(func.count(), func.max(entities.c.seq)).where(*doomed))
            ).one()
            if count:
                # Where each purged entity's next change starts it anew (``entity_purges``, for repair).
                purged = select(entities.c.collection, entities.c.entity_id).where(*doomed)
                await locked.conn.execute(
                    delete(entity_purges).where(
                        entity_purges.c.tenant_id == tenant_id,
                        tuple_(entity_purges.c.collection, entity_purges.c.entity_id).in_(purged),
                    )
                )
                await locked.conn.execute(
                    insert(entity_purges).from_select(
                        ["tenant_id", "collection", "entity_id", "seq"],
                        select(literal(tenant_id), entities.c.collection, entities.c.entity_id, entities.c.seq).where(
                            *doomed
                        ),
                    )
                )
                await locked.conn.execute(delete(entities).where(*doomed))
                purged_seq = max(locked.purged_seq, max_seq)
                await locked.conn.execute(
                    update(tenants).where(tenants.c.id == tenant_id).values(purged_seq=purged_seq)
                )
                await purge_channel_rows(locked.conn, tenant_id, purged_seq)
                await locked.conn.commit()
            return int(count)

    # KeyStore
    add_tenant_key = via("_keys", SqlKeys.add_tenant_key)
    rewrap_tenant_key = via("_keys", SqlKeys.rewrap_tenant_key)
    destroy_tenant_keys = via("_keys", SqlKeys.destroy_tenant_keys)
    key_usage = via("_keys", SqlKeys.key_usage)
    sealed_rows = via("_keys", SqlKeys.sealed_rows)
    reseal = via("_keys", SqlKeys.reseal)
    checkpoint_macs = via("_keys", SqlKeys.checkpoint_macs)
    remac_checkpoints = via("_keys", SqlKeys.remac_checkpoints)
    erase_tenant = via("_keys", SqlKeys.erase_tenant)
    changes_by_user = via("_keys", SqlKeys.changes_by_user)

    # AdminStore
    find_conflicts = via("_admin", SqlAdmin.find_conflicts)
    record_override = via("_admin", SqlAdmin.record_override)
    conflict_override = via("_admin", SqlAdmin.conflict_override)
    find_dead_letters = via("_admin", SqlAdmin.find_dead_letters)
    get_dead_letter = via("_admin", SqlAdmin.get_dead_letter)
    set_dead_letter_status = via("_admin", SqlAdmin.set_dead_letter_status)
    change_at = via("_admin", SqlAdmin.change_at)
    get_replica = via("_admin", SqlAdmin.get_replica)
    append_audit = via("_admin", SqlAdmin.append_audit)
    audit_log = via("_admin", SqlAdmin.audit_log)

    # IntegrityStore
    checkpoints = via("_integrity", SqlIntegrity.checkpoints)
    purged = via("_integrity", SqlIntegrity.purged)
    member_channels = via("_integrity", SqlIntegrity.member_channels)
    record_verification = via("_integrity", SqlIntegrity.record_verification)
    verifications = via("_integrity", SqlIntegrity.verifications)

    # ChannelStore
    pull_in_channels = via("_channels", SqlChannels.pull_in_channels)
    evictions = via("_channels", SqlChannels.evictions)
    scoped_page = via("_channels", SqlChannels.scoped_page)
    latest_in_channels = via("_channels", SqlChannels.latest_in_channels)
    entity_channels = via("_channels", SqlChannels.entity_channels)
    conflicts_in_channels = via("_channels", SqlChannels.conflicts_in_channels)
    set_entity_channels = via("_channels", SqlChannels.set_entity_channels)
