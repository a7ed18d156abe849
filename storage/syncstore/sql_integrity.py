"""``SqlIntegrity``: the ``IntegrityStore`` part of ``SqlStore``.

``latest_seqs`` is one query per chunk of entity rows: the highest seq of each
from ``ix_changes_tenant_entity_seq`` (one index-only seek per entity).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, select, true, tuple_

from syncstore import rows
from syncstore.integrity import EntityKey
from syncstore.records import CheckpointRecord, VerificationRecord
from syncstore.sql_database import SqlDatabase
from syncstore.sql_session import CHUNK, chunks
from syncstore.tables import chain_checkpoints, changes, entities, entity_channels, verifications


class SqlIntegrity:
    def __init__(self, db: SqlDatabase) -> None:
        self._db = db

    async def latest_seqs(self, tenant_id: str, keys: Sequence[EntityKey]) -> dict[EntityKey, int]:
        found: dict[EntityKey, int] = {}
        by_collection: defaultdict[str, set[str]] = defaultdict(set)
        for collection, entity_id in keys:
            by_collection[collection].add(entity_id)
        for collection, ids in by_collection.items():
            for chunk in chunks(sorted(ids)):
                for row in await self._db.rows(_latest_query(tenant_id, collection, chunk)):
                    if row["seq"] is not None:
                        found[(collection, row["entity_id"])] = int(row["seq"])
        return found

    async def member_channels(self, tenant_id: str, keys: Sequence[EntityKey]) -> dict[EntityKey, set[str]]:
        found: dict[EntityKey, set[str]] = {}
        unique = sorted(set(keys))
        for start in range(0, len(unique), CHUNK // 2):
            chunk = unique[start : start + CHUNK // 2]
            query = select(entity_channels.c.collection, entity_channels.c.entity_id, entity_channels.c.channel).where(
                entity_channels.c.tenant_id == tenant_id,
                tuple_(entity_channels.c.collection, entity_channels.c.entity_id).in_(chunk),
                entity_channels.c.member == true(),
            )
            for row in await self._db.rows(query):
                found.setdefault((row["collection"], row["entity_id"]), set()).add(row["channel"])
        return found

    async def checkpoints(self, tenant_id: str, after_seq: int, limit: int) -> list[CheckpointRecord]:
        if limit <= 0:
            return []
        query = (
            select(chain_checkpoints)
            .where(chain_checkpoints.c.tenant_id == tenant_id, chain_checkpoints.c.seq > after_seq)
            .order_by(chain_checkpoints.c.seq)
            .limit(limit)
        )
        return [rows.checkpoint_from_row(row) for row in await self._db.rows(query)]

    async def record_verification(self, tenant_id: str, record: VerificationRecord) -> None:
        async with self._db.connect(write=True) as conn:
            await conn.execute(verifications.insert().values(rows.verification_to_row(tenant_id, record)))
            await conn.commit()

    async def verifications(self, tenant_id: str, limit: int) -> list[VerificationRecord]:
        query = (
            select(verifications)
            .where(verifications.c.tenant_id == tenant_id)
            .order_by(verifications.c.started_at.desc())
            .limit(limit)
        )
        return [rows.verification_from_row(row) for row in await self._db.rows(query)]


def _latest_query(tenant_id: str, collection: str, ids: Sequence[str]) -> Select[Any]:
    """Per entity row of ``ids``, the seq of its latest change: one index-only seek each (the newest entry of
    ``ix_changes_tenant_entity_seq``), not a scan of its history. An entity without a row is not asked for:
    the read path only checks rows it read."""
    c = changes.alias("c")
    newest = (
        select(c.c.seq)
        .where(
            c.c.tenant_id == entities.c.tenant_id,
            c.c.collection == entities.c.collection,
            c.c.entity_id == entities.c.entity_id,
        )
        .order_by(c.c.seq.desc())
        .limit(1)
        .scalar_subquery()
    )
    return select(entities.c.entity_id, newest.label("seq")).where(
        entities.c.tenant_id == tenant_id, entities.c.collection == collection, entities.c.entity_id.in_(ids)
    )
