"""Admin API for attachments: list (pending uploads, refused ones: the dead letters), show, replay,
and the attachments an entity's history references.

* ``GET /v1/admin/attachments?state=uploading|available|refused`` - rows, with the entities known to reference each.
* ``GET /v1/admin/attachments/{id}`` - one attachment.
* ``POST /v1/admin/attachments/{id}/replay`` - re-admit a refused upload (see ``UploadService.replay``).
* ``GET /v1/admin/entities/{collection}/{entity}/attachments`` - every attachment any version of the entity
  referenced (from its decrypted change log) and the ones it references now, each with its status.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from msgspec import Struct

from syncproto import errors
from syncproto.attachments import attachment_ref, refs_in_view
from syncproto.hlc import iso
from syncserver.admin.audit import AuditLog
from syncserver.admin.history import EntityHistoryService
from syncserver.attachments.uploads import UploadService
from syncserver.auth.scopes import admin_only
from syncserver.auth.tokens import Principal
from syncserver.errors import ApiError
from syncserver.transport.openapi import AUTHENTICATED, error_responses
from syncstore.attachments import AttachmentRecord

AdminRequest = Request[Principal, Any, Any]


class AttachmentAdminView(Struct, gc=False, omit_defaults=True):
    id: str
    user: str
    size: int
    media_type: str
    state: str
    status: Literal["pending", "available", "refused"]
    """As devices see it (PROTOCOL.md §10.2)."""
    received: int
    created_at: str
    updated_at: str
    code: str | None = None
    message: str | None = None
    expires_at: str | None = None
    last_referenced_at: str | None = None
    shares_bytes_of: str | None = None
    """The attachment whose stored bytes this one reuses (equal content)."""
    entities: list[str] = []
    """``collection/entity`` recorded as referencing it."""


class AttachmentPage(Struct, gc=False):
    attachments: list[AttachmentAdminView]
    next: str | None = None


class EntityAttachment(Struct, gc=False, omit_defaults=True):
    id: str
    status: Literal["pending", "available", "refused"]
    current: bool
    """Referenced by the entity's value or a sibling now (else only by an earlier version)."""
    seqs: list[int]
    """Seqs of the changes that wrote a reference to it."""
    media_type: str | None = None
    size: int | None = None
    code: str | None = None


def _iso(ms: int | None) -> str | None:
    return None if ms is None else iso(ms)


def _status(row: AttachmentRecord | None) -> Literal["pending", "available", "refused"]:
    if row is None or row.state == "uploading":
        return "pending"
    return "available" if row.state == "available" else "refused"


async def admin_view(uploads: UploadService, row: AttachmentRecord) -> AttachmentAdminView:
    refs = await uploads.meta.refs(row.tenant_id, row.id)
    return AttachmentAdminView(
        id=row.id,
        user=row.user_sub,
        size=row.size,
        media_type=row.media_type,
        state=row.state,
        status=_status(row),
        received=row.upload_offset,
        created_at=_iso(row.created_at) or "",
        updated_at=_iso(row.updated_at) or "",
        code=row.code,
        message=row.message,
        expires_at=_iso(row.expires_at) if row.state == "uploading" else None,
        last_referenced_at=_iso(row.referenced_at),
        shares_bytes_of=row.blob_owner if row.blob_owner not in (None, row.id) else None,
        entities=[f"{r.collection}/{r.entity_id}" for r in refs],
    )


class AttachmentAdminController(Controller):
    path = "/v1/admin"
    tags = ["admin: attachments"]
    guards = [admin_only]

    @get(
        "/attachments",
        summary="List attachments (refused ones are dead letters)",
        responses=error_responses(400, *AUTHENTICATED),
    )
    async def list_attachments(
        self,
        request: AdminRequest,
        upload_service: NamedDependency[UploadService],
        upload_state: Annotated[
            Literal["uploading", "available", "refused"] | None, QueryParameter(name="state")
        ] = None,
        after: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> AttachmentPage:
        rows = await upload_service.meta.list_attachments(
            request.user.tenant, state=upload_state, after=after, limit=limit + 1
        )
        views = [await admin_view(upload_service, r) for r in rows[:limit]]
        return AttachmentPage(views, rows[limit - 1].id if len(rows) > limit else None)

    @get(
        "/attachments/{attachment_id:str}", summary="Show an attachment", responses=error_responses(404, *AUTHENTICATED)
    )
    async def show(
        self, request: AdminRequest, upload_service: NamedDependency[UploadService], attachment_id: FromPath[str]
    ) -> AttachmentAdminView:
        row = await upload_service.meta.get_attachment(request.user.tenant, attachment_id)
        if row is None:
            raise ApiError(404, errors.NOT_FOUND, f"no attachment {attachment_id}")
        return await admin_view(upload_service, row)

    @post(
        "/attachments/{attachment_id:str}/replay",
        summary="Replay a refused upload: re-admit it so the device uploads it again",
        status_code=200,
        responses=error_responses(404, 409, *AUTHENTICATED),
    )
    async def replay(
        self,
        request: AdminRequest,
        upload_service: NamedDependency[UploadService],
        audit_log: NamedDependency[AuditLog],
        attachment_id: FromPath[str],
    ) -> AttachmentAdminView:
        row = await upload_service.replay(request.user.tenant, attachment_id)
        await audit_log.record(request.user, "attachment.replay", attachment_id, {"state": row.state, "code": row.code})
        return await admin_view(upload_service, row)

    @get(
        "/entities/{collection:str}/{entity:str}/attachments",
        summary="Attachments an entity's history references",
        responses=error_responses(404, *AUTHENTICATED),
    )
    async def entity_attachments(
        self,
        request: AdminRequest,
        entity_history: NamedDependency[EntityHistoryService],
        upload_service: NamedDependency[UploadService],
        collection: FromPath[str],
        entity: FromPath[str],
    ) -> list[EntityAttachment]:
        history = await entity_history.history(request.user, collection, entity, 0, 10_000)
        seqs: dict[str, list[int]] = {}
        for entry in history.changes:
            for op in entry.ops or []:
                if isinstance(op, dict) and op.get("op") == "set" and (ref := attachment_ref(op.get("value"))):
                    seqs.setdefault(ref.id, []).append(entry.seq)
        current = {r.id for r in refs_in_view(history.current)} if history.current is not None else set()
        found = []
        for attachment_id in sorted(seqs.keys() | current):
            row = await upload_service.meta.get_attachment(request.user.tenant, attachment_id)
            found.append(
                EntityAttachment(
                    id=attachment_id,
                    status=_status(row),
                    current=attachment_id in current,
                    seqs=seqs.get(attachment_id, []),
                    media_type=row.media_type if row else None,
                    size=row.size if row else None,
                    code=row.code if row else None,
                )
            )
        return found
