"""An entity's history for admins: its applied changes decrypted, its rejected changes, its state now."""

from __future__ import annotations

import msgspec

from syncproto import errors
from syncproto.hlc import iso
from syncserver.admin.dead_letters import letter_view
from syncserver.admin.store import AdminBackend
from syncserver.admin.views import EntityHistory, HistoryEntry
from syncserver.auth.tokens import Principal
from syncserver.errors import ApiError
from syncserver.keys.keyring import Ciphers
from syncserver.sync import payloads
from syncserver.sync.conflicts import conflict_id
from syncserver.sync.pull import PullService
from syncstore.adminstore import ConflictQuery, DeadLetterQuery


class EntityHistoryService:
    """Entity histories of one principal's tenant. Callers check the admin role."""

    def __init__(self, store: AdminBackend, ciphers: Ciphers, pull: PullService) -> None:
        self.store = store
        self.ciphers = ciphers
        self.pull_service = pull

    async def history(self, who: Principal, collection: str, entity: str, after: int, limit: int) -> EntityHistory:
        """The entity's applied changes in seq order (decrypted), its rejected changes, and its state now."""
        cipher = await self.ciphers.cipher(who.tenant)
        rows = await self.store.changes(who.tenant, after, limit + 1, collection=collection, entity_id=entity)
        more = len(rows) > limit
        rows = rows[:limit]
        found = await self.store.find_conflicts(
            who.tenant, None, 10_000, ConflictQuery(collection=collection, entity_id=entity)
        )
        by_seq: dict[int, list[str]] = {}
        for c in found:
            by_seq.setdefault(c.seq, []).append(conflict_id(c.seq, c.idx))
        entries = [
            HistoryEntry(
                seq=r.seq,
                change_id=r.change_id,
                replica=r.replica_id,
                n=r.n,
                user=r.user,
                hlc=r.hlc,
                context=r.context,
                created_at=iso(r.created_at),
                ops=msgspec.to_builtins(
                    payloads.open_ops(cipher, r.collection, r.entity_id, r.seq, r.key_version, r.payload)
                ),
                result="applied",
                conflicts=by_seq.get(r.seq, []),
            )
            for r in rows
        ]
        letters = await self.store.find_dead_letters(
            who.tenant, None, 100, DeadLetterQuery(collection=collection, entity_id=entity)
        )
        rejected = [letter_view(cipher, d, with_change=True) for d in letters]
        current = await self.store.get_entity(who.tenant, collection, entity)
        if not entries and not rejected and current is None:
            raise ApiError(404, errors.NOT_FOUND, f"no entity {collection}/{entity}")
        return EntityHistory(
            collection=collection,
            entity=entity,
            changes=entries,
            rejected=rejected,
            current=self.pull_service.view(cipher, current) if current is not None else None,
            next=rows[-1].seq if more else None,
        )
