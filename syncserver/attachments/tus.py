"""tus 1.0 resumable uploads: core, creation, creation-with-upload, checksum, termination and expiration.

Routes (every one needs the bearer token, like any route; uploads are per tenant and user):

* ``OPTIONS /v1/attachments/uploads`` - discovery: versions, extensions, max size, checksum algorithms.
* ``POST /v1/attachments/uploads`` - creation. ``Upload-Length`` is required (no deferred length);
  ``Upload-Metadata`` carries the attachment reference: ``id``, ``sha256`` (hex) and ``media_type``
  (or tus's conventional ``filetype``). The upload URL is ``/v1/attachments/uploads/<id>``: the
  device chose the id offline, so a retried creation finds the same upload. With
  ``Content-Type: application/offset+octet-stream`` the request may carry the first bytes (tus
  creation-with-upload, checksummed like a PATCH): one request instead of two per small file, one
  round trip less on a phone's slow link. A retried creation whose upload already has bytes keeps
  them and ignores the body; ``Upload-Offset`` says where to resume.
* ``HEAD …/<id>`` - ``Upload-Offset``: where to resume after any interruption.
* ``PATCH …/<id>`` - ``Content-Type: application/offset+octet-stream`` at ``Upload-Offset``; an
  ``Upload-Checksum`` (``sha1``, ``sha256`` or ``md5``) that does not match gives 460 and nothing
  of the body is kept.
* ``DELETE …/<id>`` - termination of an unfinished (or refused) upload.

Written against the tus 1.0.0 specification (tus.io/protocols/resumable-upload) and checked with
``tuspy``, which works unchanged.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from litestar import Controller, Request, Response, delete, head, route
from litestar.di import NamedDependency
from litestar.enums import HttpMethod
from litestar.exceptions import InternalServerException
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, Parameter, RequestBody, Schema
from litestar.params import FromPath

from syncproto import errors
from syncproto.attachments import AttachmentRef
from syncserver.attachments.uploads import ClientGone, Declared, UploadService
from syncserver.auth.tokens import Principal
from syncserver.errors import ApiError
from syncserver.transport.openapi import AUTHENTICATED, error_responses
from syncstore.attachments import AttachmentRecord

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,checksum,termination,expiration"
CHECKSUMS = {"sha1": "sha1", "sha256": "sha256", "md5": "md5"}
UPLOADS = "/v1/attachments/uploads"
OFFSET_OCTET_STREAM = "application/offset+octet-stream"
_INT = re.compile(r"^[0-9]{1,19}$")
DISCOVERY = {"Tus-Version": TUS_VERSION, "Tus-Extension": EXTENSIONS, "Tus-Checksum-Algorithm": ",".join(CHECKSUMS)}

TusRequest = Request[Principal, Any, Any]


def _tus(headers: dict[str, str] | None = None) -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, **(headers or {})}


def _check_version(request: TusRequest) -> None:
    if request.headers.get("tus-resumable") != TUS_VERSION:
        raise ApiError(412, errors.INVALID_REQUEST, "Tus-Resumable must be 1.0.0", {"Tus-Version": TUS_VERSION})


def _int_header(request: TusRequest, name: str) -> int:
    raw = request.headers.get(name)
    if raw is None or not _INT.match(raw):
        raise ApiError(400, errors.INVALID_REQUEST, f"{name} must be a non-negative integer", _tus())
    return int(raw)


def parse_metadata(raw: str | None) -> dict[str, str]:
    """``Upload-Metadata``: comma-separated ``key base64value`` pairs."""
    found: dict[str, str] = {}
    for pair in (raw or "").split(","):
        parts = pair.strip().split(" ")
        if not parts[0]:
            continue
        if len(parts) > 2:
            raise ApiError(400, errors.INVALID_REQUEST, "Upload-Metadata is malformed", _tus())
        try:
            found[parts[0]] = base64.b64decode(parts[1], validate=True).decode() if len(parts) == 2 else ""
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ApiError(400, errors.INVALID_REQUEST, f"Upload-Metadata {parts[0]} is not base64", _tus()) from exc
    return found


def declared_from(metadata: dict[str, str], length: int) -> Declared:
    """Validate the metadata as an attachment reference (same rules as ``syncproto.attachments``)."""
    import msgspec

    try:
        ref = msgspec.convert(
            {
                "id": metadata.get("id", ""),
                "size": length,
                "sha256": metadata.get("sha256", "").lower(),
                "media_type": (metadata.get("media_type") or metadata.get("filetype") or "").lower(),
            },
            AttachmentRef,
        )
    except msgspec.ValidationError as exc:
        raise ApiError(400, errors.INVALID_REQUEST, f"Upload-Metadata: {exc}", _tus()) from exc
    return Declared(ref.id, ref.size, ref.sha256, ref.media_type)


def _expires(row: AttachmentRecord) -> dict[str, str]:
    if row.state != "uploading":
        return {}
    return {"Upload-Expires": email.utils.formatdate(row.expires_at / 1000, usegmt=True)}


def _location(row: AttachmentRecord) -> str:
    return f"{UPLOADS}/{row.id}"


def _content_type(request: TusRequest) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _checksum(request: TusRequest) -> tuple[str, bytes] | None:
    raw = request.headers.get("upload-checksum")
    if raw is None:
        return None
    algorithm, _, digest = raw.strip().partition(" ")
    if algorithm not in CHECKSUMS:
        raise ApiError(400, errors.INVALID_REQUEST, f"checksum algorithm {algorithm!r} is not supported", _tus())
    try:
        return CHECKSUMS[algorithm], base64.b64decode(digest, validate=True)
    except binascii.Error as exc:
        raise ApiError(400, errors.INVALID_REQUEST, "Upload-Checksum is not base64", _tus()) from exc


async def _body(request: TusRequest) -> AsyncIterator[bytes]:
    try:
        async for piece in request.stream():
            if piece:
                yield piece
    except InternalServerException as exc:  # Litestar's "client disconnected prematurely"
        raise ClientGone from exc


def _header(name: str, schema: Schema, description: str, required: bool = True) -> Parameter:
    return Parameter(
        name=name,
        param_in="header",
        required=required,
        schema=schema,
        description=description,
    )


_VERSION = _header(
    "Tus-Resumable",
    Schema(type="string", enum=[TUS_VERSION]),  # type: ignore[arg-type]
    "The tus protocol version: 1.0.0 (412 when missing or another version).",
)
_OFFSET = Schema(type="integer", minimum=0)  # type: ignore[arg-type]


@dataclass
class TusOperation(Operation):
    """Documents the headers a tus request needs; the handlers check them, not Litestar's parsing.

    tus wants 412 for a missing or unsupported version, where parameter parsing would answer 400.
    An ``OPTIONS`` (discovery, or the methods of one upload) needs no version and answers 204; one
    handler serves it with ``POST`` or ``PATCH``, because Litestar's own ``OPTIONS`` for a path served
    by several handlers may list only some of their methods.
    """

    def __post_init__(self) -> None:
        if "Options" in (self.operation_id or ""):
            self.parameters = [p for p in self.parameters or [] if isinstance(p, Parameter) and p.param_in == "path"]
            self.request_body = None
            refusals = {k: v for k, v in (self.responses or {}).items() if k in ("401", "403")}
            self.responses = {"204": OpenAPIResponse(description="tus discovery headers and Allow"), **refusals}
            return
        self.parameters = [*(self.parameters or []), _VERSION, *self.tus_headers()]

    def tus_headers(self) -> list[Parameter]:
        return []


def _binary_body(required: bool) -> RequestBody:
    binary = Schema(type="string", format="binary")  # type: ignore[arg-type]
    return RequestBody(content={OFFSET_OCTET_STREAM: OpenAPIMediaType(schema=binary)}, required=required)


_CHECKSUM_HEADER = _header(
    "Upload-Checksum",
    Schema(type="string", pattern=r"^(sha1|sha256|md5) [A-Za-z0-9+/]+={0,2}$"),  # type: ignore[arg-type]
    "`algorithm base64(digest)` of this request's body (sha1, sha256 or md5).",
    required=False,
)


@dataclass
class TusCreateOperation(TusOperation):
    def __post_init__(self) -> None:
        super().__post_init__()
        if "Options" not in (self.operation_id or ""):
            self.request_body = _binary_body(required=False)  # creation-with-upload

    def tus_headers(self) -> list[Parameter]:
        return [
            _header("Upload-Length", _OFFSET, "The file's size in bytes."),
            _header(
                "Upload-Metadata",
                Schema(type="string"),  # type: ignore[arg-type]
                "Comma-separated `key base64(value)` pairs: id, sha256, media_type (or filetype), name.",
            ),
            _CHECKSUM_HEADER,
        ]


@dataclass
class TusAppendOperation(TusOperation):
    def __post_init__(self) -> None:
        super().__post_init__()
        if "Options" not in (self.operation_id or ""):
            self.request_body = _binary_body(required=True)

    def tus_headers(self) -> list[Parameter]:
        return [
            _header("Upload-Offset", _OFFSET, "Where these bytes go: the server's current offset."),
            _CHECKSUM_HEADER,
        ]


class TusController(Controller):
    path = UPLOADS
    tags = ["attachments"]

    @route(
        "/",
        http_method=[HttpMethod.POST, HttpMethod.OPTIONS],
        summary="Create an upload (tus creation, creation-with-upload); OPTIONS: tus discovery",
        status_code=201,
        responses=error_responses(400, 409, 412, 413, 415, 460, *AUTHENTICATED),
        request_max_body_size=2**62,  # bounded by the upload's declared length instead
        operation_class=TusCreateOperation,
    )
    async def create(self, request: TusRequest, upload_service: NamedDependency[UploadService]) -> Response[None]:
        # One handler for both methods: Litestar would otherwise replace a separate OPTIONS handler on this
        # path by its own, depending on registration order.
        if request.method == HttpMethod.OPTIONS:
            headers = {**DISCOVERY, "Tus-Max-Size": str(upload_service.settings.max_bytes)}
            return Response(None, status_code=204, headers=_tus(headers))
        _check_version(request)
        if request.headers.get("upload-defer-length") is not None:
            raise ApiError(400, errors.INVALID_REQUEST, "Upload-Length is required (no deferred length)", _tus())
        declared = declared_from(
            parse_metadata(request.headers.get("upload-metadata")), _int_header(request, "upload-length")
        )
        with_data = _content_type(request) == OFFSET_OCTET_STREAM
        checksum = _checksum(request) if with_data else None
        row = await upload_service.create(request.user, declared)
        if with_data and row.state == "uploading" and row.upload_offset == 0:
            try:
                row = await upload_service.receive(request.user, row.id, 0, _body(request), checksum)
            except ClientGone:
                return Response(None, status_code=400, headers=_tus())  # nobody is listening
        headers = {"Location": _location(row), "Upload-Offset": str(row.upload_offset), **_expires(row)}
        return Response(None, status_code=201, headers=_tus(headers))

    @head(
        "/{attachment_id:str}",
        summary="Offset of an upload (tus core)",
        responses=error_responses(400, 404, 410, 412, *AUTHENTICATED),
        operation_class=TusOperation,
    )
    async def offset(
        self, request: TusRequest, upload_service: NamedDependency[UploadService], attachment_id: FromPath[str]
    ) -> Response[None]:
        _check_version(request)
        try:
            row = await upload_service.get(request.user, attachment_id)
        except ApiError as exc:  # HEAD has no body: the status says it
            return Response(None, status_code=exc.status, headers=_tus({"Cache-Control": "no-store"}))
        status = 410 if row.state == "refused" else 200
        headers = {
            "Upload-Offset": str(row.upload_offset),
            "Upload-Length": str(row.size),
            "Cache-Control": "no-store",
            **_expires(row),
        }
        return Response(None, status_code=status, headers=_tus(headers))

    @route(
        "/{attachment_id:str}",
        http_method=[HttpMethod.PATCH, HttpMethod.OPTIONS],
        summary="Append to an upload (tus core, checksum); OPTIONS: the methods of an upload",
        status_code=204,
        responses=error_responses(400, 404, 409, 410, 412, 413, 415, 422, 460, *AUTHENTICATED),
        request_max_body_size=2**62,  # bounded by the upload's declared length instead
        operation_class=TusAppendOperation,
    )
    async def append(
        self, request: TusRequest, upload_service: NamedDependency[UploadService], attachment_id: FromPath[str]
    ) -> Response[None]:
        if request.method == HttpMethod.OPTIONS:
            return Response(None, status_code=204, headers=_tus({**DISCOVERY, "Allow": "DELETE, HEAD, OPTIONS, PATCH"}))
        _check_version(request)
        if _content_type(request) != OFFSET_OCTET_STREAM:
            raise ApiError(415, errors.INVALID_REQUEST, "Content-Type must be application/offset+octet-stream", _tus())
        offset = _int_header(request, "upload-offset")
        checksum = _checksum(request)
        try:
            row = await upload_service.receive(request.user, attachment_id, offset, _body(request), checksum)
        except ClientGone:
            return Response(None, status_code=400, headers=_tus())  # nobody is listening
        headers = {"Upload-Offset": str(row.upload_offset), **_expires(row)}
        return Response(None, status_code=204, headers=_tus(headers))

    @delete(
        "/{attachment_id:str}",
        summary="Terminate an upload (tus termination)",
        status_code=204,
        responses=error_responses(404, 409, 412, *AUTHENTICATED),
        operation_class=TusOperation,
    )
    async def terminate(
        self, request: TusRequest, upload_service: NamedDependency[UploadService], attachment_id: FromPath[str]
    ) -> Response[None]:
        _check_version(request)
        await upload_service.terminate(request.user, attachment_id)
        return Response(None, status_code=204, headers=_tus())
