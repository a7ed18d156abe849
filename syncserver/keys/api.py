"""Admin API for key lifecycle and data-subject requests, under ``/v1/admin`` (admin role, own tenant only).

| method and path | action |
|---|---|
| ``GET /v1/admin/keys`` | key versions, states, rows per version |
| ``POST /v1/admin/keys/rotate`` | new active data-key version |
| ``POST /v1/admin/keys/reencrypt?max_rows=N`` | move up to N rows to the active version; repeat until done |
| ``POST /v1/admin/keys/{version}/destroy`` | destroy a retired version no row uses |
| ``POST /v1/admin/tenant/erase?confirm=<tenant id>`` | crypto-shred the token's tenant |
| ``GET /v1/admin/users/{sub}/export`` | every change, dead letter and attachment of one user, decrypted (streamed) |

Master-key rotation concerns every tenant, so it is CLI-only. Each action is
audited with the admin's ``sub`` as the actor (read it at ``/v1/admin/audit``).
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, MediaType, Request, get, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, Parameter, QueryParameter
from litestar.response import Stream

from syncproto import errors
from syncserver.auth.scopes import admin_only
from syncserver.auth.tokens import Principal
from syncserver.errors import ApiError
from syncserver.keys.operations import KeyOpError, KeyOps, KeyStatus, ReencryptResult, RotateResult
from syncserver.keys.subjects import EraseResult, SubjectRequests, UserExport
from syncserver.live import LiveHub
from syncserver.transport.openapi import AUTHENTICATED, error_responses

AdminRequest = Request[Principal, Any, Any]


class KeyAdminController(Controller):
    path = "/v1/admin"
    tags = ["admin: keys"]
    guards = [admin_only]

    @get("/keys", summary="Key versions of the token's tenant", responses=error_responses(*AUTHENTICATED))
    async def status(self, request: AdminRequest, key_ops: NamedDependency[KeyOps]) -> KeyStatus:
        return await key_ops.status(request.user.tenant)

    @post(
        "/keys/rotate",
        summary="Rotate the tenant's data key",
        status_code=200,
        responses=error_responses(409, *AUTHENTICATED),
    )
    async def rotate(self, request: AdminRequest, key_ops: NamedDependency[KeyOps]) -> RotateResult:
        try:
            return await key_ops.rotate(request.user.tenant, request.user.sub)
        except KeyOpError as exc:
            raise ApiError(409, errors.INVALID_REQUEST, str(exc)) from exc

    @post(
        "/keys/reencrypt",
        summary="Move rows to the active key version, at most max_rows per call",
        status_code=200,
        responses=error_responses(400, *AUTHENTICATED),
    )
    async def reencrypt(
        self,
        request: AdminRequest,
        key_ops: NamedDependency[KeyOps],
        max_rows: Annotated[int, QueryParameter(ge=1, le=100_000)] = 10_000,
        batch_size: Annotated[int, QueryParameter(ge=1, le=5_000)] = 500,
    ) -> ReencryptResult:
        return await key_ops.reencrypt(request.user.tenant, request.user.sub, batch_size=batch_size, max_rows=max_rows)

    @post(
        "/keys/{version:int}/destroy",
        summary="Destroy a retired key version",
        description=(
            "409 while a row is still sealed under it (run reencrypt), and until `SYNC_KEY_CACHE_TTL_S` has passed "
            "since it was retired (servers may still write under it until their key cache expires)."
        ),
        status_code=200,
        # 404: a version that is not an integer matches no route.
        responses=error_responses(400, 404, 409, *AUTHENTICATED),
    )
    async def destroy(
        self,
        request: AdminRequest,
        key_ops: NamedDependency[KeyOps],
        version: Annotated[int, Parameter(ge=1, le=2**31 - 1)],
    ) -> dict[str, int]:
        try:
            destroyed = await key_ops.destroy_version(request.user.tenant, version, request.user.sub)
        except KeyOpError as exc:
            raise ApiError(409, errors.INVALID_REQUEST, str(exc)) from exc
        return {"destroyed": destroyed}

    @post(
        "/tenant/erase",
        summary="Erase the token's tenant (crypto-shredding); confirm with its id",
        description="`confirm` must be the token's tenant id; any other well-formed value is 409, nothing erased.",
        status_code=200,
        responses=error_responses(400, 409, *AUTHENTICATED),
    )
    async def erase(
        self,
        request: AdminRequest,
        subject_requests: NamedDependency[SubjectRequests],
        live: NamedDependency[LiveHub],
        confirm: Annotated[str, QueryParameter(min_length=1, description="The token's tenant id, to confirm.")],
    ) -> EraseResult:
        if confirm != request.user.tenant:
            # Well-formed but not this tenant: the request conflicts with the tenant it would erase (not a 422).
            raise ApiError(409, errors.INVALID_REQUEST, "set confirm to the tenant id to erase it")
        result = await subject_requests.erase_tenant(request.user.tenant, request.user.sub)
        # Its WebSockets close and the pages its live feed kept (decrypted views, keys) go now, not at the
        # feed's next read: nothing of an erased tenant is served from memory.
        live.forget(request.user.tenant)
        return result

    @get(
        "/users/{sub:str}/export",
        summary="Export one user's data (GDPR access)",
        description=(
            "Every change and dead letter the user pushed and every attachment they uploaded (bytes as base64), "
            "decrypted, as one JSON document streamed as it is read: each element of its lists on a line of its "
            "own, `replicas` and `unavailable` last. What failed its integrity check is named in `unavailable` "
            "(`changes/<seq>`, `dead_letters/<replica>/<n>`, `attachments/<id>`; such an attachment is listed with "
            "`content_b64` null). An attachment deleted during the export is left out, one re-encrypted during it "
            "is read from its new objects. If stored attachment bytes change (or the attachment is deleted) while "
            "they are being sent, the response is cut off (not valid JSON) rather than carry wrong bytes. Audited "
            'as `user.export`: `{"phase": "start"}` before the first byte, the counts before the last, or '
            '`{"phase": "aborted", ...}` with the counts so far if the export ends early (an error, the client '
            "leaving)."
        ),
        media_type=MediaType.JSON,
        responses={
            200: ResponseSpec(
                data_container=UserExport, description="The user's data, streamed", generate_examples=False
            ),
            **error_responses(400, *AUTHENTICATED),
        },
    )
    async def export(
        self, request: AdminRequest, subject_requests: NamedDependency[SubjectRequests], sub: FromPath[str]
    ) -> Stream:
        stream = await subject_requests.export_user_stream(request.user.tenant, sub, request.user.sub)
        # After the response, also when the client left part way: the export stops there and its closing audit
        # row says ``aborted`` (a stream read to its end is closed already: this does nothing).
        return Stream(stream, media_type=MediaType.JSON, background=BackgroundTask(stream.aclose))
