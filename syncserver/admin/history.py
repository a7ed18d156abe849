"""An entity's history for admins: its applied changes decrypted, its rejected changes, its state now.

With an attachment store, every change lists the attachments its ``set`` ops
referenced, each with its upload's status now (``pending``, ``available`` or
``refused`` with the refusal's code), and the state now carries the statuses of
the attachments it references, as a device's entity read does. One metadata
query covers the whole page, plus one per refused attachment for its code.
"""

from __future__ import annotations

from typing import Any

import msgspec

from syncproto import errors
from syncproto.attachments import AttachmentStatus, attachment_ref
from syncproto.hlc import iso
from syncserver.admin.dead_letters import letter_view
from syncserver.admin.store import AdminBackend
from syncserver.admin.views import DeadLetterView, EntityHistory, HistoryAttachment, HistoryEntry, in_range
from syncserver.attachments.status import annotate
from syncserver.auth.tokens import Principal
from syncserver.errors import ApiError
from syncserver.integrity import quarantine
from syncserver.keys.envelope import DecryptionError
from syncserver.keys.keyring import Ciphers, TenantCipher
from syncserver.sync import payloads
from syncserver.sync.conflicts import conflict_id
from syncserver.sync.pull import PullService
from syncstore.adminstore import ConflictQuery, DeadLetterQuery
from syncstore.attachments import AttachmentStore
from syncstore.records import ChangeRecord


class EntityHistoryService:
    """Entity histories of one principal's tenant. Callers check the admin role."""

    def __init__(
        self, store: AdminBackend, ciphers: Ciphers, pull: PullService, attachments: AttachmentStore | None = None
    ) -> None:
        self.store = store
        self.ciphers = ciphers
        self.pull_service = pull
        self.attachments = attachments

    async def history(self, who: Principal, collection: str, entity: str, after: int, limit: int) -> EntityHistory:
        """The entity's applied changes in seq order (decrypted), its rejected changes, and its state now."""
        in_range(after, "after", 0)
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
                ops=ops,
                result="applied" if ops is not None else "unavailable",
                conflicts=by_seq.get(r.seq, []),
            )
            for r in rows
            for ops in [_ops_or_none(cipher, who.tenant, r)]
        ]
        letters = await self.store.find_dead_letters(
            who.tenant, None, 100, DeadLetterQuery(collection=collection, entity_id=entity)
        )
        rejected = [letter_view(cipher, d, with_change=True) for d in letters]
        current = await self.store.get_entity(who.tenant, collection, entity)
        if not entries and not rejected and current is None:
            raise ApiError(404, errors.NOT_FOUND, f"no entity {collection}/{entity}")
        views, unavailable = self.pull_service.views(cipher, [(current, 0)] if current is not None else [])
        history = EntityHistory(
            collection=collection,
            entity=entity,
            changes=entries,
            rejected=rejected,
            current=views[0] if views else None,
            next=rows[-1].seq if more else None,
            current_unavailable=bool(unavailable),
        )
        if self.attachments is not None:
            await self._attachments(who.tenant, history, self.attachments)
        return history

    @staticmethod
    async def _attachments(tenant: str, history: EntityHistory, meta: AttachmentStore) -> None:
        """Fill each change's ``attachments`` and the state's statuses (see the module docs)."""
        found: list[tuple[HistoryEntry | DeadLetterView, list[HistoryAttachment]]] = []
        for applied in history.changes:
            found.append((applied, _referenced(applied.ops or [])))
        for rejected in history.rejected:
            found.append((rejected, _referenced((rejected.change or {}).get("ops", []))))
        ids = sorted({a.id for _, refs in found for a in refs})
        states = await meta.attachment_states(tenant, ids) if ids else {}
        codes: dict[str, str | None] = {}
        for attachment_id in ids:
            if states.get(attachment_id) == "refused":
                row = await meta.get_attachment(tenant, attachment_id)
                codes[attachment_id] = row.code if row is not None else None
        for entry, refs in found:
            entry.attachments = [
                msgspec.structs.replace(a, status=_status(states.get(a.id)), code=codes.get(a.id)) for a in refs
            ]
        if history.current is not None:
            await annotate(meta, tenant, [history.current])


def _referenced(ops: list[Any]) -> list[HistoryAttachment]:
    found = []
    for op in ops:
        if isinstance(op, dict) and op.get("op") == "set" and (ref := attachment_ref(op.get("value"))) is not None:
            found.append(HistoryAttachment(ref.id, "pending", ref.media_type, ref.size, str(op.get("field"))))
    return found


def _status(state: str | None) -> AttachmentStatus:
    return "available" if state == "available" else "refused" if state == "refused" else "pending"


def _ops_or_none(cipher: TenantCipher, tenant: str, r: ChangeRecord) -> list[Any] | None:
    """The change's ops as JSON, or None (logged and counted) when its stored record fails its check."""
    try:
        ops = payloads.open_ops(cipher, r)
    except DecryptionError as exc:
        quarantine.failed("changes", tenant, f"{r.collection}/{r.entity_id}@{r.seq}", exc)
        return None
    result: list[Any] = msgspec.to_builtins(ops)
    return result
