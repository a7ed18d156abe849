"""The admin JSON API under ``/v1/admin``: bearer token with the ``admin`` role, one tenant per token."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath, FromQuery, QueryParameter

from syncproto import errors
from syncserver.admin.service import AdminService, ConflictFilters
from syncserver.admin.views import (
    AdminConflict,
    AdminConflictPage,
    AuditPage,
    DeadLetterPage,
    DeadLetterView,
    EntityHistory,
    OverrideResult,
    ReplayResult,
    override_request_decoder,
)
from syncserver.auth import Principal
from syncserver.errors import ApiError
from syncserver.transport.body import decode_body
from syncserver.transport.openapi import AUTHENTICATED, error_responses
from syncstore.adminstore import DeadLetterQuery

AdminRequest = Request[Principal, Any, Any]
Limit = Annotated[int, QueryParameter(ge=1, le=500, description="Page size (1-500).")]


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
        admin_service: NamedDependency[AdminService],
        collection: FromQuery[str | None] = None,
        entity: FromQuery[str | None] = None,
        field: FromQuery[str | None] = None,
        kind: FromQuery[str | None] = None,
        status: FromQuery[str | None] = None,
        replica: FromQuery[str | None] = None,
        user: FromQuery[str | None] = None,
        since: FromQuery[dt.datetime | None] = None,
        until: FromQuery[dt.datetime | None] = None,
        after: FromQuery[str | None] = None,
        limit: Limit = 50,
    ) -> AdminConflictPage:
        filters = ConflictFilters(collection, entity, field, kind, status, replica, user, to_ms(since), to_ms(until))
        return await admin_service.list_conflicts(request.user, filters, after, limit)

    @get(
        "/conflicts/{conflict_id:str}",
        summary="Show one conflict, decrypted",
        description="Every competing value with its writer, replica and HLC; the rule, the winner, the override "
        "(who and when) and the field's current state.",
        responses=error_responses(400, 404, *AUTHENTICATED),
    )
    async def conflict(
        self, request: AdminRequest, admin_service: NamedDependency[AdminService], conflict_id: FromPath[str]
    ) -> AdminConflict:
        return await admin_service.get_conflict(request.user, conflict_id)

    @post(
        "/conflicts/{conflict_id:str}/override",
        summary="Override a conflict's resolution",
        description='Body `{"pick": i}` or `{"value": v}` (delete/update conflicts: `{"pick": 0}` deletes, '
        '`{"field": f, "value": v}` keeps the entity). Written as a server change whose context covers all '
        "siblings, so they collapse on every device at its next sync.",
        status_code=200,
        responses=error_responses(400, 404, 409, 422, *AUTHENTICATED),
    )
    async def override(
        self, request: AdminRequest, admin_service: NamedDependency[AdminService], conflict_id: FromPath[str]
    ) -> OverrideResult:
        choice = await decode_body(request, override_request_decoder)
        return await admin_service.override(request.user, conflict_id, choice)

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
        admin_service: NamedDependency[AdminService],
        collection: FromPath[str],
        entity: FromPath[str],
        after: Annotated[int, QueryParameter(ge=0, description="Only changes with a greater seq.")] = 0,
        limit: Limit = 200,
    ) -> EntityHistory:
        return await admin_service.history(request.user, collection, entity, after, limit)

    @get(
        "/dead-letters",
        summary="List dead letters (rejected changes)",
        description="Newest first. Filters combine with AND; `before` is the previous page's `next`.",
        responses=error_responses(400, 422, *AUTHENTICATED),
    )
    async def dead_letters(
        self,
        request: AdminRequest,
        admin_service: NamedDependency[AdminService],
        status: FromQuery[str | None] = None,
        code: FromQuery[str | None] = None,
        replica: FromQuery[str | None] = None,
        user: FromQuery[str | None] = None,
        collection: FromQuery[str | None] = None,
        entity: FromQuery[str | None] = None,
        since: FromQuery[dt.datetime | None] = None,
        until: FromQuery[dt.datetime | None] = None,
        before: FromQuery[str | None] = None,
        limit: Limit = 50,
    ) -> DeadLetterPage:
        query = DeadLetterQuery(status, code, replica, user, collection, entity, to_ms(since), to_ms(until))
        return await admin_service.list_dead_letters(request.user, query, before, limit)

    @get(
        "/dead-letters/{replica:str}/{n:int}",
        summary="Show one dead letter, decrypted",
        responses=error_responses(400, 404, *AUTHENTICATED),
    )
    async def dead_letter(
        self,
        request: AdminRequest,
        admin_service: NamedDependency[AdminService],
        replica: FromPath[str],
        n: FromPath[int],
    ) -> DeadLetterView:
        return await admin_service.get_dead_letter(request.user, replica, n)

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
        admin_service: NamedDependency[AdminService],
        replica: FromPath[str],
        n: FromPath[int],
    ) -> ReplayResult:
        return await admin_service.replay(request.user, replica, n)

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
        admin_service: NamedDependency[AdminService],
        replica: FromPath[str],
        n: FromPath[int],
    ) -> DeadLetterView:
        return await admin_service.discard(request.user, replica, n)

    @get(
        "/audit",
        summary="The audit log of admin actions",
        description="Newest first; `target` narrows to one conflict id or dead letter (`replica/n`).",
        responses=error_responses(400, *AUTHENTICATED),
    )
    async def audit(
        self,
        request: AdminRequest,
        admin_service: NamedDependency[AdminService],
        target: FromQuery[str | None] = None,
        before: FromQuery[int | None] = None,
        limit: Limit = 100,
    ) -> AuditPage:
        return await admin_service.audit(request.user, target, before, limit)
