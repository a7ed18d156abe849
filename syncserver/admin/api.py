"""The admin JSON API under ``/v1/admin``: bearer token with the ``admin`` role, one tenant per token."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody
from litestar.params import FromPath, FromQuery, QueryParameter

from syncproto import errors
from syncserver.admin.audit import AuditLog
from syncserver.admin.conflicts import ConflictAdmin, ConflictFilters
from syncserver.admin.dead_letters import DeadLetterAdmin
from syncserver.admin.history import EntityHistoryService
from syncserver.admin.views import (
    AUDIT_ID_MAX,
    LIMIT_MAX,
    OVERRIDE_EXACTLY_ONE,
    AdminConflict,
    AdminConflictPage,
    AuditPage,
    DeadLetterPage,
    DeadLetterView,
    EntityHistory,
    IntegrityStatus,
    OverrideRequest,
    OverrideResult,
    ReplayResult,
    override_request_decoder,
)
from syncserver.auth.tokens import Principal
from syncserver.errors import ApiError
from syncserver.integrity.verify import Verifier, integrity_status
from syncserver.transport.body import decode_body
from syncserver.transport.body_schema import RawSchema, json_schema
from syncserver.transport.openapi import (
    AUTHENTICATED,
    SAFE_INT_MAX,
    ConflictCursor,
    ConflictId,
    DeadLetterCursor,
    ReplicaCounter,
    Timestamp,
    error_responses,
    parse_time,
)
from syncstore.adminstore import DeadLetterQuery

AdminRequest = Request[Principal, Any, Any]
Limit = Annotated[int, QueryParameter(ge=1, le=LIMIT_MAX, description=f"Page size (1-{LIMIT_MAX}).")]


@dataclass
class OverrideOperation(Operation):
    """Documents the override body: ``OverrideRequest``'s schema plus its exactly-one-of rule."""

    def __post_init__(self) -> None:
        schema = {**json_schema(OverrideRequest), **OVERRIDE_EXACTLY_ONE}
        content = {"application/json": OpenAPIMediaType(schema=RawSchema(raw=schema))}
        self.request_body = RequestBody(content=content, required=True)


def require_admin(connection: ASGIConnection[Any, Principal, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: only tokens with the ``admin`` role pass."""
    if connection.user.role != "admin":
        raise ApiError(403, errors.FORBIDDEN, "this endpoint needs a token with the admin role")


def to_ms(value: dt.datetime | None) -> int | None:
    """Milliseconds since the epoch; a time without a zone is taken as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp() * 1000)


class AdminController(Controller):
    path = "/v1/admin"
    tags = ["admin"]
    guards = [require_admin]

    @get(
        "/conflicts",
        summary="List conflicts with filters",
        description="Conflicts in log order, decrypted. `replica` and `user` match any competing value's writer. "
        "Times are ISO 8601 (UTC if no zone); `since` is inclusive, `until` exclusive.",
        responses=error_responses(400, 422, *AUTHENTICATED),
    )
    async def conflicts(
        self,
        request: AdminRequest,
        conflict_admin: NamedDependency[ConflictAdmin],
        collection: FromQuery[str | None] = None,
        entity: FromQuery[str | None] = None,
        field: FromQuery[str | None] = None,
        kind: FromQuery[str | None] = None,
        status: FromQuery[str | None] = None,
        replica: FromQuery[str | None] = None,
        user: FromQuery[str | None] = None,
        since: Timestamp = None,
        until: Timestamp = None,
        after: ConflictCursor = None,
        limit: Limit = 50,
    ) -> AdminConflictPage:
        start, end = to_ms(parse_time(since, "since")), to_ms(parse_time(until, "until"))
        filters = ConflictFilters(collection, entity, field, kind, status, replica, user, start, end)
        return await conflict_admin.list_conflicts(request.user, filters, after, limit)

    @get(
        "/conflicts/{conflict_id:str}",
        summary="Show one conflict, decrypted",
        description="Every competing value with its writer, replica and HLC; the rule, the winner, the override "
        "(who and when) and the field's current state.",
        responses=error_responses(400, 404, *AUTHENTICATED),
    )
    async def conflict(
        self, request: AdminRequest, conflict_admin: NamedDependency[ConflictAdmin], conflict_id: ConflictId
    ) -> AdminConflict:
        return await conflict_admin.get_conflict(request.user, conflict_id)

    @post(
        "/conflicts/{conflict_id:str}/override",
        summary="Override a conflict's resolution",
        description='Body `{"pick": i}` or `{"value": v}` (delete/update conflicts: `{"pick": 0}` deletes, '
        '`{"field": f, "value": v}` keeps the entity). Written as a server change whose context covers all '
        "siblings, so they collapse on every device at its next sync.",
        status_code=200,
        responses=error_responses(400, 404, 409, 422, *AUTHENTICATED),
        operation_class=OverrideOperation,
    )
    async def override(
        self, request: AdminRequest, conflict_admin: NamedDependency[ConflictAdmin], conflict_id: ConflictId
    ) -> OverrideResult:
        return await conflict_admin.override(
            request.user, conflict_id, await decode_body(request, override_request_decoder)
        )

    @get(
        "/entities/{collection:str}/{entity:str}/history",
        summary="An entity's history",
        description="Applied changes in seq order with decrypted ops, replica, user, HLC, seq and the conflicts "
        "each found; rejected changes (dead letters); the merged state now.",
        responses=error_responses(400, 404, *AUTHENTICATED),
    )
    async def history(
        self,
        request: AdminRequest,
        entity_history: NamedDependency[EntityHistoryService],
        collection: FromPath[str],
        entity: FromPath[str],
        after: Annotated[
            int, QueryParameter(ge=0, le=SAFE_INT_MAX, description="Only changes with a greater seq.")
        ] = 0,
        limit: Limit = 200,
    ) -> EntityHistory:
        return await entity_history.history(request.user, collection, entity, after, limit)

    @get(
        "/dead-letters",
        summary="List dead letters (rejected changes)",
        description="Newest first. Filters combine with AND; `before` is the previous page's `next`.",
        responses=error_responses(400, 422, *AUTHENTICATED),
    )
    async def dead_letters(
        self,
        request: AdminRequest,
        dead_letter_admin: NamedDependency[DeadLetterAdmin],
        status: FromQuery[str | None] = None,
        code: FromQuery[str | None] = None,
        replica: FromQuery[str | None] = None,
        user: FromQuery[str | None] = None,
        collection: FromQuery[str | None] = None,
        entity: FromQuery[str | None] = None,
        since: Timestamp = None,
        until: Timestamp = None,
        before: DeadLetterCursor = None,
        limit: Limit = 50,
    ) -> DeadLetterPage:
        start, end = to_ms(parse_time(since, "since")), to_ms(parse_time(until, "until"))
        query = DeadLetterQuery(status, code, replica, user, collection, entity, start, end)
        return await dead_letter_admin.list_dead_letters(request.user, query, before, limit)

    @get(
        "/dead-letters/{replica:str}/{n:int}",
        summary="Show one dead letter, decrypted",
        responses=error_responses(400, 404, *AUTHENTICATED),
    )
    async def dead_letter(
        self,
        request: AdminRequest,
        dead_letter_admin: NamedDependency[DeadLetterAdmin],
        replica: FromPath[str],
        n: ReplicaCounter,
    ) -> DeadLetterView:
        return await dead_letter_admin.get_dead_letter(request.user, replica, n)

    @post(
        "/dead-letters/{replica:str}/{n:int}/replay",
        summary="Replay a dead letter",
        description="Applies the stored change as a server change (same ops, stamp and context), at most once: "
        "repeating the call answers `already_replayed`. If it is still rejected the letter stays open.",
        status_code=200,
        responses=error_responses(400, 404, 409, *AUTHENTICATED),
    )
    async def replay(
        self,
        request: AdminRequest,
        dead_letter_admin: NamedDependency[DeadLetterAdmin],
        replica: FromPath[str],
        n: ReplicaCounter,
    ) -> ReplayResult:
        return await dead_letter_admin.replay(request.user, replica, n)

    @post(
        "/dead-letters/{replica:str}/{n:int}/discard",
        summary="Discard a dead letter",
        description="Marks an open dead letter discarded; it stays for the record.",
        status_code=200,
        responses=error_responses(400, 404, 409, *AUTHENTICATED),
    )
    async def discard(
        self,
        request: AdminRequest,
        dead_letter_admin: NamedDependency[DeadLetterAdmin],
        replica: FromPath[str],
        n: ReplicaCounter,
    ) -> DeadLetterView:
        return await dead_letter_admin.discard(request.user, replica, n)

    @get(
        "/audit",
        summary="The audit log of admin actions",
        description="Newest first; `target` narrows to one conflict id or dead letter (`replica/n`).",
        responses=error_responses(400, *AUTHENTICATED),
    )
    async def audit(
        self,
        request: AdminRequest,
        audit_log: NamedDependency[AuditLog],
        target: FromQuery[str | None] = None,
        before: Annotated[
            int | None, QueryParameter(ge=1, le=AUDIT_ID_MAX, description="Only entries older than this id.")
        ] = None,
        limit: Limit = 100,
    ) -> AuditPage:
        return await audit_log.audit(request.user, target, before, limit)

    @get(
        "/integrity",
        summary="The latest verification runs and the rows set aside lately",
        description=(
            "`verifications` are the latest `syncserver verify` runs over the tenant (newest first); "
            "`set_aside` the rows that failed their integrity check in the process that answered."
        ),
        responses=error_responses(*AUTHENTICATED),
    )
    async def integrity(self, request: AdminRequest, integrity_verifier: NamedDependency[Verifier]) -> IntegrityStatus:
        return await integrity_status(integrity_verifier, request.user.tenant)
