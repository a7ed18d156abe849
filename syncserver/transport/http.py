"""HTTP endpoints of protocol v1: push, pull, entity read, conflict log."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter

from syncproto.messages import (
    ConflictPage,
    ConflictView,
    EntityView,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
    pull_request_decoder,
    push_request_decoder,
)
from syncserver.auth.tokens import Principal
from syncserver.sync.conflicts import ConflictService
from syncserver.sync.pull import PullService
from syncserver.sync.push import PushService
from syncserver.transport.body import decode_body, decode_json_body
from syncserver.transport.body_schema import operation
from syncserver.transport.openapi import AUTHENTICATED, ConflictCursor, ConflictId, error_responses
from syncstore.records import ConflictFilter

SyncRequest = Request[Principal, Any, Any]
ERRORS = 'Errors are `{"error": {"code", "message"}}` with a stable code (see PROTOCOL.md).'


def _json(message: Any, status: int = 200) -> Response[bytes]:
    return Response(msgspec.json.encode(message), status_code=status, media_type="application/json")


class SyncController(Controller):
    path = "/v1"
    tags = ["sync"]

    @post(
        "/sync/push",
        summary="Push changes",
        description="Apply a replica's changes in counter order. One result per change. " + ERRORS,
        status_code=200,
        responses=error_responses(400, 413, 422, 429, *AUTHENTICATED),
        operation_class=operation(PushRequest, PushResponse),
    )
    async def push(self, request: SyncRequest, push_service: NamedDependency[PushService]) -> Response[bytes]:
        # Read (within the body limit), then room for it before it is decoded: a reconnect storm waits here,
        # undecoded, while a client that sends its body slowly holds nothing but its own connection. The room is
        # held until the push ends, even if this client gives up first (sync/push_budget.py).
        raw = await request.body()
        user = request.user
        result: PushResponse = await push_service.budget.run(
            len(raw), lambda: push_service.push(user, decode_json_body(raw, push_request_decoder))
        )
        return _json(result)

    @post(
        "/sync/pull",
        summary="Pull changes since a cursor",
        description="Entities changed since the cursor, with only their changed fields. " + ERRORS,
        status_code=200,
        responses=error_responses(400, 413, 422, 429, *AUTHENTICATED),
        operation_class=operation(PullRequest, PullResponse),
    )
    async def pull(self, request: SyncRequest, pull_service: NamedDependency[PullService]) -> Response[bytes]:
        body = await decode_body(request, pull_request_decoder)
        result: PullResponse = await pull_service.pull(request.user, body)
        return _json(result)

    @get(
        "/entities/{collection:str}/{entity:str}",
        summary="Read one entity's merged state",
        responses=error_responses(404, *AUTHENTICATED),
    )
    async def entity(
        self,
        request: SyncRequest,
        pull_service: NamedDependency[PullService],
        collection: FromPath[str],
        entity: FromPath[str],
    ) -> EntityView:
        return await pull_service.entity(request.user, collection, entity)

    @get("/conflicts", summary="List the conflict log", responses=error_responses(400, *AUTHENTICATED))
    async def conflicts(
        self,
        request: SyncRequest,
        conflict_service: NamedDependency[ConflictService],
        collection: FromQuery[str | None] = None,
        entity: FromQuery[str | None] = None,
        field: FromQuery[str | None] = None,
        kind: FromQuery[str | None] = None,
        status: FromQuery[str | None] = None,
        after: ConflictCursor = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> ConflictPage:
        filters = ConflictFilter(collection, entity, field, kind, status)
        return await conflict_service.list(request.user, filters, after, limit)

    @get(
        "/conflicts/{conflict_id:str}", summary="Show one conflict", responses=error_responses(400, 404, *AUTHENTICATED)
    )
    async def conflict(
        self, request: SyncRequest, conflict_service: NamedDependency[ConflictService], conflict_id: ConflictId
    ) -> ConflictView:
        return await conflict_service.get(request.user, conflict_id)
