"""Remembering which entities were written with a reference to an attachment.

``AttachmentPushService`` is the ``PushService`` that, before the push, records
``(attachment, collection, entity)`` for every ``set`` op whose value is an
attachment reference. The record is only a hint for the download's scope check,
which always re-reads the entity (a ref to a rejected change or an overwritten
value grants nothing). Recording before the commit means a crash can leave an
extra hint, never a missing one.
"""

from __future__ import annotations

import time
from typing import Any

from syncproto.attachments import attachment_ref
from syncproto.messages import PushRequest, PushResponse, SetOp
from syncserver.auth.tokens import Principal
from syncserver.sync.push import PushService
from syncstore.attachments import AttachmentRefRecord, AttachmentStore


def refs_of(request: PushRequest) -> list[AttachmentRefRecord]:
    found = []
    for change in request.changes:
        for op in change.ops:
            if isinstance(op, SetOp) and (ref := attachment_ref(op.value)) is not None:
                found.append(AttachmentRefRecord(ref.id, change.collection, change.entity))
    return found


class AttachmentPushService(PushService):
    """``PushService`` that records attachment references (see the module docs)."""

    def __init__(self, attachment_meta: AttachmentStore, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.attachment_meta = attachment_meta

    async def push(self, principal: Principal, request: PushRequest, *, server_side: bool = False) -> PushResponse:
        refs = refs_of(request)
        if refs:
            await self.attachment_meta.add_refs(principal.tenant, refs, time.time_ns() // 1_000_000)
        return await super().push(principal, request, server_side=server_side)
