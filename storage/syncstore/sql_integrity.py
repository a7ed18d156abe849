"""``SqlIntegrity``: the ``IntegrityStore`` part of ``SqlStore``.

Every read of ``entities`` adds ``tables.latest_seq_column()``: the highest seq
of each entity in ``ix_changes_tenant_entity_seq`` (one index-only seek per row).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from sqlalchemy import select

from syncstore import rows
from syncstore.integrity import EntityKey
from syncstore.records import CheckpointRecord, VerificationRecord
from syncstore.sql_database import SqlDatabase
from syncstore.sql_session import channel_members
from syncstore.tables import chain_checkpoints, entity_purges, verifications


class SqlIntegrity:
    def __init__(self, db: SqlDatabase) -> None:
        self._db = db

    async def member_channels(self, tenant_id: str, keys: Sequence[EntityKey]) -> dict[EntityKey, set[str]]:
        """In one read, by the push session's own statement (``sql_session.channel_members``)."""
        found = await self._db.read(functools.partial(channel_members, tenant_id=tenant_id, keys=keys))
        return {key: set(channels) for key, channels in found.items()}

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

    async def purged(self, tenant_id: str, collection: str, entity_id: str) -> tuple[int, int]:
        """One read of the entity's row and the tenant's marker row (empty collection and id) of ``entity_purges``."""
        p = entity_purges
        query = select(p.c.collection, p.c.seq).where(
            p.c.tenant_id == tenant_id,
            ((p.c.collection == collection) & (p.c.entity_id == entity_id))
            | ((p.c.collection == "") & (p.c.entity_id == "")),
        )
        found = {row["collection"] == "": int(row["seq"]) for row in await self._db.rows(query)}
        return found.get(False, 0), found.get(True, 0)

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
