"""Attachment statuses: in pulls and entity reads, and asked for by id (``POST /v1/attachments/status``).

``AttachmentPullService`` is the ``PullService`` with one extra step: every
``EntityView`` it returns gets ``attachments``, the status of each attachment
its sent fields reference: ``pending`` (no verified bytes yet, including no
upload at all), ``available`` or ``refused``.

A status is not a change in the log (docs/adr/0024): an upload finishing
changes no entity, so a device that pulled a ``pending`` reference asks again
with ``POST /v1/attachments/status`` (``AttachmentStatusController``), scoped
exactly like a download (``AttachmentReader``).

Pitfall: the live channel's tenant-wide fan-out renders views with
``PullService.view`` (synchronous, cached) and so carries no statuses; a
client learns them from its next HTTP pull, entity read or status request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency

from syncproto.attachments import (
    AttachmentStatus,
    AttachmentStatusRequest,
    AttachmentStatusResponse,
    attachment_status_request_decoder,
    refs_in_view,
)
from syncproto.messages import EntityView, PullRequest, PullResponse
from syncproto.schema import Schema
from syncserver.attachments.download import AttachmentReader
from syncserver.auth.scopes import Scope
from syncserver.auth.tokens import Principal
from syncserver.keys.keyring import Ciphers
from syncserver.settings import Limits
from syncserver.sync.pull import PullService
from syncserver.transport.body import decode_body
from syncserver.transport.body_schema import operation
from syncserver.transport.openapi import AUTHENTICATED, error_responses
from syncstore.attachments import AttachmentRefRecord, AttachmentStore
from syncstore.store import Store

_STATUS: dict[str, AttachmentStatus] = {"available": "available", "refused": "refused"}
SCOPE_READ_LIMIT = 5000
"""A driver whose channels hold at most this many entities (of the referencing collections) is answered
with one read of its scope; a larger scope is checked entity by entity."""


async def annotate(meta: AttachmentStore, tenant: str, views: list[EntityView]) -> None:
    """Set ``attachments`` on each view that references any (one metadata query for all)."""
    found = [[r.id for r in refs_in_view(v)] for v in views]
    ids = sorted({i for refs in found for i in refs})
    if not ids:
        return
    states = await meta.attachment_states(tenant, ids)
    for view, refs in zip(views, found, strict=True):
        if refs:
            view.attachments = {i: _STATUS.get(states.get(i, ""), "pending") for i in refs}


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


async def statuses(reader: AttachmentReader, principal: Principal, ids: Sequence[str]) -> dict[str, AttachmentStatus]:
    """The status of each id ``principal`` may see; the others are absent (two metadata queries in all).

    A tenant-wide role sees an id uploaded to its tenant or referenced by one of its entities; a
    driver only an id referenced by an entity in its channels now (the download rule).
    """
    states = await reader.meta.attachment_states(principal.tenant, ids)
    refs = await reader.meta.refs_of(principal.tenant, ids)
    scope = Scope.of(principal)
    if scope.channels is None:
        seen = set(states) | {r.attachment_id for r in refs}
    else:
        seen = await _referenced_in_channels(reader, principal, scope.channels, refs)
    return {i: _STATUS.get(states.get(i, ""), "pending") for i in sorted(seen)}


async def _referenced_in_channels(
    reader: AttachmentReader, principal: Principal, channels: frozenset[str], refs: list[AttachmentRefRecord]
) -> set[str]:
    """The ids an entity in ``channels`` references now: ``AttachmentReader.referenced_in_scope``, batched.

    One read of the scope's entities (of the referencing collections) and one check of them against the
    change log, as a driver's pull does, instead of one entity read per reference; a scope of more than
    ``SCOPE_READ_LIMIT`` entities is checked entity by entity.
    """
    wanted: dict[tuple[str, str], set[str]] = {}
    for ref in refs:
        wanted.setdefault((ref.collection, ref.entity_id), set()).add(ref.attachment_id)
    if not wanted:
        return set()
    pull, tenant = reader.pull, principal.tenant
    collections = sorted({c for c, _ in wanted})
    in_scope = await pull.access.pull_in_channels(tenant, sorted(channels), 0, SCOPE_READ_LIMIT + 1, collections)
    if len(in_scope) > SCOPE_READ_LIMIT:
        return await reader.referenced_in_scope(principal, sorted({r.attachment_id for r in refs}))
    rows = [(f.record, 0) for f in in_scope if (f.record.collection, f.record.entity_id) in wanted]
    if not rows:
        return set()
    cipher = await pull.ciphers.cipher(tenant, {row.key_version for row, _ in rows})
    views, _ = pull.views(cipher, rows, Scope(channels))  # unreadable ones are left out
    found: set[str] = set()
    for view in views:
        found |= wanted[(view.collection, view.entity)] & {r.id for r in refs_in_view(view)}
    return found


class AttachmentStatusController(Controller):
    path = "/v1/attachments"
    tags = ["attachments"]

    @post(
        "/status",
        summary="Current status of attachments by id",
        description=(
            "The status (`pending`, `available`, `refused`) of each id the caller may see; an id it may not "
            "see, or that nothing references, is absent. A device asks for the references it holds as "
            'pending (PROTOCOL.md §10.2). Errors are `{"error": {"code", "message"}}`.'
        ),
        status_code=200,
        responses=error_responses(400, 413, 422, 429, *AUTHENTICATED),
        operation_class=operation(AttachmentStatusRequest, AttachmentStatusResponse),
    )
    async def status(
        self, request: Request[Principal, Any, Any], attachment_reader: NamedDependency[AttachmentReader]
    ) -> Response[bytes]:
        body = await decode_body(request, attachment_status_request_decoder)
        found = await statuses(attachment_reader, request.user, body.ids)
        encoded = msgspec.json.encode(AttachmentStatusResponse(found))
        return Response(encoded, status_code=200, media_type="application/json")
