"""Attachment statuses in pulls and entity reads, without touching the merge or the pull logic.

``AttachmentPullService`` is the ``PullService`` with one extra step: every
``EntityView`` it returns gets ``attachments``, the status of each attachment
its sent fields reference: ``pending`` (no verified bytes yet, including no
upload at all), ``available`` or ``refused``.

Pitfall: the live channel's tenant-wide fan-out renders views with
``PullService.view`` (synchronous, cached) and so carries no statuses; a
client learns them from its next HTTP pull or entity read.
"""

from __future__ import annotations

from syncproto.attachments import AttachmentStatus, refs_in_view
from syncproto.messages import EntityView, PullRequest, PullResponse
from syncproto.schema import Schema
from syncserver.auth.tokens import Principal
from syncserver.keys.keyring import Ciphers
from syncserver.settings import Limits
from syncserver.sync.pull import PullService
from syncstore.attachments import AttachmentStore
from syncstore.store import Store

_STATUS: dict[str, AttachmentStatus] = {"available": "available", "refused": "refused"}


async def annotate(meta: AttachmentStore, tenant: str, views: list[EntityView]) -> None:
    """Set ``attachments`` on each view that references any (one metadata query for all)."""
    wanted = {v.entity: [r.id for r in refs_in_view(v)] for v in views}
    ids = sorted({i for found in wanted.values() for i in found})
    if not ids:
        return
    states = await meta.attachment_states(tenant, ids)
    for view in views:
        found = [r.id for r in refs_in_view(view)]
        if found:
            view.attachments = {i: _STATUS.get(states.get(i, ""), "pending") for i in found}


class AttachmentPullService(PullService):
    """``PullService`` whose pulls and entity reads carry attachment statuses."""

    def __init__(
        self, attachment_meta: AttachmentStore, store: Store, ciphers: Ciphers, schema: Schema, limits: Limits
    ) -> None:
        super().__init__(store, ciphers, schema, limits)
        self.attachment_meta = attachment_meta

    async def pull(self, principal: Principal, request: PullRequest) -> PullResponse:
        response = await super().pull(principal, request)
        await annotate(self.attachment_meta, principal.tenant, response.changes)
        return response

    async def entity(self, principal: Principal, collection: str, entity_id: str) -> EntityView:
        view = await super().entity(principal, collection, entity_id)
        await annotate(self.attachment_meta, principal.tenant, [view])
        return view
