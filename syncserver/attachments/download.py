"""``GET /v1/attachments/{id}``: the bytes of an available attachment, ranged, cached, scope-checked.

* Authorized like an entity read: a tenant-wide role reads any attachment of
  its tenant; a driver only one referenced (value or sibling) by an entity
  visible in its channels. Anything else, including another tenant's id and an
  attachment still uploading, is ``not_found``: it looks exactly like absent.
* ``ETag`` is the attachment id (content never changes under an id);
  ``Cache-Control: private, max-age=31536000, immutable``; ``If-None-Match``
  gives 304. One ``Range: bytes=…`` range gives 206; several ranges, or one whose
  last position is before its first, are served as the whole body (RFC 9110); an
  unsatisfiable one gives 416.
* Every chunk in the range is opened (authenticated) before the first byte is
  sent: a tampered chunk gives 500 ``data_integrity`` and no data. A range of
  at most ``HOLD_BYTES`` is kept in memory from that check and sent as one
  body; a larger one is opened again while streaming, one chunk ahead of the
  one being sent (``SealedBlob.read``), so memory per download stays bounded.
  While streaming, chunks of 256 KiB or more are decrypted on worker threads,
  not on the event loop (AES-GCM releases the GIL), so a large download does
  not hold up the requests of other devices; a held range (a photo) is still
  decrypted on the loop, where one download measured faster.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, cast

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Stream

from syncproto import errors
from syncproto.attachments import AttachmentRef, refs_in_view
from syncserver.attachments import metrics
from syncserver.attachments.blobstore import BlobStore
from syncserver.attachments.chunks import ChunkError, SealedBlob
from syncserver.auth.scopes import Scope
from syncserver.auth.tokens import Principal
from syncserver.errors import ApiError
from syncserver.sync.pull import PullService
from syncserver.transport.openapi import AUTHENTICATED, error_responses
from syncstore.attachments import AttachmentRecord, AttachmentStore

log = logging.getLogger("syncserver.attachments")

CACHE_CONTROL = "private, max-age=31536000, immutable"
HOLD_BYTES = 2 * 1024 * 1024
"""A range up to this size is opened once and sent from memory; a larger one is opened twice (check, then
stream, one chunk ahead), so a download never holds more than this plus two chunks, whatever the file's size."""
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class AttachmentReader:
    """Finds, authorizes and opens attachments for download."""

    def __init__(self, meta: AttachmentStore, blobs: BlobStore, pull: PullService) -> None:
        self.meta = meta
        self.blobs = blobs
        self.pull = pull

    async def readable(self, principal: Principal, attachment_id: str) -> AttachmentRecord:
        row = await self.meta.get_attachment(principal.tenant, attachment_id)
        if row is None or row.state != "available" or not await self.allowed(principal, row):
            raise ApiError(404, errors.NOT_FOUND, f"no attachment {attachment_id}")
        return row

    async def allowed(self, principal: Principal, row: AttachmentRecord) -> bool:
        """A tenant-wide role reads any attachment; a driver one that an entity in its channels references with
        this very content (the size and SHA-256 the upload was verified against).

        The content check matters because a device writes references offline, naming any id: a driver who
        learnt another's attachment id (from a delivery it no longer holds, say) could otherwise write it into
        its own delivery and download it. A reference with the right size and SHA-256 names content its writer
        already knows.
        """
        if Scope.of(principal).unrestricted:
            return True
        cipher = await self.pull.ciphers.cipher(row.tenant_id, [row.mac_version])
        if not cipher.has([row.mac_version]):
            return False  # no key to check the content with (re-encryption moves it on): fail closed

        def same_content(ref: AttachmentRef) -> bool:
            return ref.size == row.size and cipher.mac(row.mac_version, bytes.fromhex(ref.sha256)) == row.mac

        return row.id in await self.referenced_in_scope(principal, [row.id], same_content)

    async def referenced_in_scope(
        self, principal: Principal, ids: Sequence[str], accept: Callable[[AttachmentRef], bool] | None = None
    ) -> set[str]:
        """The ids an entity the principal may see references now (value or sibling), by a reference ``accept``
        takes (any, without it).

        One query for the ref hints of all ids, then one read per distinct entity, each
        re-checked against the entity's current value: a hint alone grants nothing.
        """
        wanted: dict[tuple[str, str], set[str]] = {}
        for ref in await self.meta.refs_of(principal.tenant, ids):
            wanted.setdefault((ref.collection, ref.entity_id), set()).add(ref.attachment_id)
        found: set[str] = set()
        for (collection, entity_id), names in wanted.items():
            if names <= found:
                continue
            try:
                view = await self.pull.entity(principal, collection, entity_id)
            except ApiError:
                continue  # gone or out of scope
            found |= names & {r.id for r in refs_in_view(view) if accept is None or accept(r)}
        return found

    async def sealed(self, row: AttachmentRecord) -> SealedBlob:
        cipher = await self.pull.ciphers.cipher(row.tenant_id, [row.key_version])
        return SealedBlob.of(self.blobs, cipher, row)


def _position(digits: str) -> int:
    """A byte position from the header's digits; any past ``2**63`` is the same (Python refuses ``int`` of more
    than 4,300 digits, and no attachment is that large)."""
    return int(digits) if len(digits) <= 19 else 2**63


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` (end exclusive) of a single satisfiable range, ``None`` for the whole body.

    A header that is not one valid range (several ranges, not ``bytes``, a last position before the first) is
    ignored, as RFC 9110 (14.2) says: the whole body. A valid one that starts past the end raises 416."""
    if header is None or "," in header:
        return None
    match = _RANGE.match(header.strip())
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":
        start, end = max(0, size - _position(last)), size
    else:
        start = _position(first)
        if last != "" and _position(last) < start:
            return None
        end = size if last == "" else min(size, _position(last) + 1)
    if start >= size or start >= end:
        raise ApiError(
            416,
            errors.RANGE_NOT_SATISFIABLE,
            "the range is outside the attachment",
            {"Content-Range": f"bytes */{size}"},
        )
    return start, end


def _integrity(row: AttachmentRecord, exc: ChunkError) -> ApiError:
    metrics.INTEGRITY_FAILURES.inc()
    log.error("attachment failed its integrity check", extra={"attachment": row.id, "reason": str(exc)})
    return ApiError(500, errors.DATA_INTEGRITY, "stored attachment data failed its integrity check")


async def open_body(
    sealed: SealedBlob, row: AttachmentRecord, start: int, end: int
) -> bytearray | AsyncIterator[bytes]:
    """The plaintext of ``[start, end)``, every chunk of it authenticated before this returns.

    A range of at most ``HOLD_BYTES`` comes back as one buffer (sent as one body); a larger one as an
    iterator that opens its chunks again while streaming. Raises ``ApiError`` ``data_integrity`` (and
    sends nothing) if a chunk fails; see the module docs for memory.
    """
    try:
        if end - start <= HOLD_BYTES:
            return await sealed.read_all(start, end)  # fetched concurrently, opened once, sent from memory
        await sealed.verify(start, end)
    except ChunkError as exc:
        raise _integrity(row, exc) from exc

    async def body() -> AsyncIterator[bytes]:
        try:
            async for piece in sealed.read(start, end):
                yield piece
        except ChunkError as exc:
            # Changed after the check above: abort the response rather than send bad bytes.
            raise _integrity(row, exc) from exc

    return body()


async def open_range(sealed: SealedBlob, row: AttachmentRecord, start: int, end: int) -> AsyncIterator[bytes]:
    """``open_body`` as an iterator in every case (for responses that stream whatever the size)."""
    opened = await open_body(sealed, row, start, end)
    if not isinstance(opened, bytearray):
        return opened

    async def held() -> AsyncIterator[bytes]:
        if opened:
            yield bytes(opened)

    return held()


class HeldBody(Response[bytearray]):
    """A response whose body is a held plaintext buffer, sent as it is.

    Litestar passes only ``bytes`` through unrendered, and making ``bytes`` of the buffer would copy the
    whole range again (as costly as decrypting it). uvicorn and Litestar's test client write any bytes-like
    body; the ASGI spec says "byte string".
    """

    def render(self, content: Any, media_type: str, enc_hook: Any = None) -> bytes:
        return cast("bytes", content)  # a bytearray: bytes-like, see the class docs


class DownloadController(Controller):
    path = "/v1/attachments"
    tags = ["attachments"]

    @get(
        "/{attachment_id:str}",
        summary="Download an attachment (Range, ETag, immutable caching)",
        responses=error_responses(404, 416, 500, *AUTHENTICATED),
    )
    async def download(
        self,
        request: Request[Principal, Any, Any],
        attachment_reader: NamedDependency[AttachmentReader],
        attachment_id: FromPath[str],
    ) -> Response[Any]:
        row = await attachment_reader.readable(request.user, attachment_id)
        etag = f'"{row.id}"'
        headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Accept-Ranges": "bytes"}
        if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
            return Response(None, status_code=304, headers=headers)
        wanted = parse_range(request.headers.get("range"), row.size)
        start, end = wanted if wanted is not None else (0, row.size)
        body = await open_body(await attachment_reader.sealed(row), row, start, end)
        status = 200
        if wanted is not None:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{row.size}"
        if isinstance(body, bytearray):
            # One body message: a Stream would send it through its own task group and disconnect listener.
            return HeldBody(body, status_code=status, media_type=row.media_type, headers=headers)
        headers["Content-Length"] = str(end - start)
        return Stream(body, status_code=status, media_type=row.media_type, headers=headers)
