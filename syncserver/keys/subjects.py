"""Data-subject requests: erase a tenant (crypto-shredding), export one user's data.

One service behind both the CLI (``syncserver tenant erase``, ``export-user``)
and the admin API (``/v1/admin/tenant/erase``, ``/v1/admin/users/{sub}/export``).
Both are audited with metadata only, like the key operations.

* **erase_tenant**: destroys the tenant's keys first, then deletes its rows.
* **export_user_stream**: every change, dead letter and attachment of one
  ``sub``, decrypted, as the bytes of one JSON document (``UserExport``) made
  piece by piece: changes and dead letters are read ``PAGE`` (100) rows at a
  time and each is written as a piece of its own, attachments a chunk at a
  time; never the user's whole data in memory (a driver's thousand delivery
  photos).

Attachments (``syncserver.attachments.keyops``) follow the same rules:
``erase_tenant`` deletes their objects, the export includes them.

The export's JSON puts each element of its lists on a line of its own, and
``replicas`` and ``unavailable`` last (they are known only at the end)::

    {"tenant":"acme","sub":"d-17","exported_at":"...","changes":[
    {"seq":1,...},
    {"seq":4,...}
    ],"dead_letters":[
    ],"attachments":[
    {"id":"...",...,"content_b64":"/9j/4AAQ..."}
    ],"replicas":["phone-17"],"unavailable":[]}

A row that fails its integrity check is left out and named in ``unavailable``
(``changes/<seq>``, ``dead_letters/<replica>/<n>``); an attachment whose stored
chunks fail theirs is listed with ``content_b64`` null and named there too
(``attachments/<id>``).

An export runs as long as the user's data takes to send, and the tenant lives
on meanwhile:

* each page of rows is opened with a cipher holding its rows' key versions
  (``keyring.cipher(tenant, need)``), as each attachment is: a key rotated
  during the export, here or by another process, does not make rows sealed
  under it look damaged;
* each attachment row is read again just before its turn
  (``AttachmentKeys.export``): one deleted meanwhile is left out (unless its
  bytes had begun: see below), one re-encrypted meanwhile is read from its new
  objects, also part way through its bytes (the plaintext is the same);
* each attachment's chunks are all checked before its first byte is written,
  and its first chunk read again before it is: if they fail by then (its row
  unchanged), it is listed as failing its check. If they change later, while
  they are being streamed, the stream stops with ``ChunkError`` (or
  ``AttachmentGone``, deleted): a document cut short, never wrong bytes.

The export is audited twice: ``user.export`` ``{"phase": "start"}`` before the
first byte (data may have left even if the stream is cut off later), then,
exactly once, either the counts, written before the document's last piece is
handed out (a client that has the whole document may leave at once), or, if the
export ends without it (an error, the client gone, a cancellation, the stream
closed early), ``{"phase": "aborted", ...}`` with the counts so far, shielded
from the cancellation that ended it. A closing row still being written when the
server stops is waited for (``SubjectRequests.closing_rows_written``, called by
the services' ``close`` before the store closes).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import msgspec
from msgspec import Struct

from syncproto.hlc import iso
from syncproto.messages import Op
from syncserver.attachments import metrics
from syncserver.attachments.chunks import ChunkError
from syncserver.attachments.keyops import AttachmentGone, AttachmentKeys, ExportedAttachment, ExportItem
from syncserver.integrity import quarantine
from syncserver.keys.envelope import DecryptionError
from syncserver.keys.keyring import TenantKeyring
from syncserver.keys.operations import audit
from syncserver.sync import payloads
from syncstore.adminstore import AdminStore, DeadLetterQuery
from syncstore.keystore import KeyStore
from syncstore.store import Store, TenantNotFound

log = logging.getLogger("syncserver.keys")

PAGE = 100
"""Changes or dead letters read at a time by an export; each is then decrypted, encoded and written on its own."""


class EraseResult(Struct, gc=False):
    tenant: str
    keys_destroyed: int
    rows_deleted: dict[str, int]


class ExportedChange(Struct, gc=False):
    seq: int
    id: str
    collection: str
    entity: str
    replica: str
    n: int
    hlc: tuple[int, int]
    context: dict[str, int]
    created_at: str
    ops: list[Op]


class ExportedDeadLetter(Struct, gc=False):
    replica: str
    n: int
    id: str
    collection: str
    entity: str
    code: str
    message: str
    status: str
    created_at: str
    change: Any


class UserExport(Struct, gc=False):
    """The document ``export_user_stream`` writes (its fields in another order: see the module docs)."""

    tenant: str
    sub: str
    exported_at: str
    replicas: list[str]
    changes: list[ExportedChange]
    dead_letters: list[ExportedDeadLetter]
    attachments: list[ExportedAttachment] = []
    unavailable: list[str] = []
    """What of the user failed its integrity check and could not be exported: rows (``changes/<seq>``,
    ``dead_letters/<replica>/<n>``, left out) and attachments (``attachments/<id>``, listed with
    ``content_b64`` null); everything else is exported."""


class ExportSummary(Struct):
    """What a ``UserExportStream`` has written so far; final once ``complete`` (set as its last piece is handed
    out)."""

    changes: int = 0
    dead_letters: int = 0
    attachments: int = 0
    unavailable: list[str] = []
    complete: bool = False


class UserExportStream:
    """The bytes of one ``UserExport`` document, piece by piece: ``async for piece in stream``.

    Iterate it once, to the end, or ``aclose`` it when stopping early (a client gone): the closing audit row is
    written once, with the counts before the last piece, or as ``aborted`` when the export ends without it.
    ``summary`` counts what has been written so far (the CLI reports it at the end).
    """

    def __init__(self, pieces: AsyncGenerator[bytes, None], summary: ExportSummary, closing: _Closing) -> None:
        self._pieces = pieces
        self._closing = closing
        self.summary = summary

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._pieces

    async def aclose(self) -> None:
        """Stop the export where it is; its closing audit row is ``aborted`` unless the counts were written."""
        try:
            await self._pieces.aclose()
        finally:
            await self._closing.aborted()  # not started, the generator wrote none


def _written(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("could not write an export's closing audit row", exc_info=exc)


class _Closing:
    """The closing ``user.export`` audit row of one export: the counts, or ``aborted``; written exactly once."""

    def __init__(self, requests: SubjectRequests, tenant: str, sub: str, actor: str, summary: ExportSummary) -> None:
        self._requests = requests
        self._who = (tenant, sub, actor)
        self._summary = summary
        self._started = False

    async def done(self) -> None:
        await self._once({})

    async def aborted(self) -> None:
        await self._once({"phase": "aborted"})

    async def _once(self, details: dict[str, Any]) -> None:
        if self._started:
            return
        self._started = True
        quiet = "phase" in details  # aborted: the export's own outcome (its error, its cut) is what callers see
        summary = self._summary
        details = {**details, "changes": summary.changes, "dead_letters": summary.dead_letters}
        if summary.attachments:
            details["attachments"] = summary.attachments
        if summary.unavailable:
            details["unavailable"] = len(summary.unavailable)
        # Shielded: an export cancelled while (or before) its row is written (a client gone) still writes it.
        tenant, sub, actor = self._who
        task = asyncio.ensure_future(self._requests._audit(tenant, actor, "user.export", sub, details))
        task.add_done_callback(_written)
        self._requests.writing(task)
        try:
            await asyncio.shield(task)
        except Exception:
            if not quiet:
                raise  # no counts, no last piece: the document is not handed out whole without its audit row


_encode = msgspec.json.encode
_CONTENT_NULL = b'"content_b64":null}'


def _separator(written: int) -> bytes:
    """What comes before an element of a JSON array after ``written`` others: each on a line of its own."""
    return b"\n" if written == 0 else b",\n"


async def _base64(content: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Base64 of the pieces put together, piece by piece: the same text as encoding them all at once (the 0 to 2
    bytes after a piece's last whole group of three are carried over to the next piece)."""
    carry = b""
    async for piece in content:
        data = carry + piece if carry else piece
        whole = len(data) - len(data) % 3
        if whole:
            yield base64.b64encode(memoryview(data)[:whole])
        carry = data[whole:]
    if carry:
        yield base64.b64encode(carry)


async def _then(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for piece in rest:
        yield piece


def _attachment_failed(tenant: str, attachment_id: str, exc: ChunkError) -> None:
    """Log and count an attachment whose stored chunks failed their check (as a download does, and as a row)."""
    metrics.INTEGRITY_FAILURES.inc()
    quarantine.failed("attachments", tenant, attachment_id, exc)


async def _listed(
    rows: AsyncGenerator[ExportedChange, None] | AsyncGenerator[ExportedDeadLetter, None], replicas: set[str]
) -> AsyncGenerator[bytes, None]:
    """Each row as one element of a JSON list, on a line of its own, noting its replica."""
    written = 0
    async with aclosing(rows):
        async for row in rows:
            replicas.add(row.replica)
            yield _separator(written) + _encode(row)
            written += 1


class SubjectRequests:
    """Erasure and export over a store that is also a ``KeyStore`` and an ``AdminStore``."""

    def __init__(
        self,
        store: Store,
        keyring: TenantKeyring,
        clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        attachments: AttachmentKeys | None = None,
    ) -> None:
        if not (isinstance(store, KeyStore) and isinstance(store, AdminStore)):
            raise TypeError(f"{type(store).__name__} must implement KeyStore and AdminStore")
        self.store = store
        self.keys: KeyStore = store
        self.audit_log: AdminStore = store
        self.keyring = keyring
        self.clock = clock
        self.attachments = attachments
        self._writing: set[asyncio.Task[None]] = set()
        """Closing audit rows being written, referenced until written: the export awaiting one may be cancelled
        meanwhile (a client gone), and the server may be stopping."""

    def writing(self, task: asyncio.Task[None]) -> None:
        """Keep ``task`` (a closing audit row's write) until it is done, for ``closing_rows_written``."""
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def closing_rows_written(self, timeout_s: float = 10.0) -> None:
        """Wait, up to ``timeout_s``, for the closing audit rows still being written (before the store closes).

        An export cut short by the server's shutdown (its response cancelled) writes its ``aborted`` row from a
        task of its own; closing the store under it would lose the row. One still not written by then is logged.
        """
        if not self._writing:
            return
        _, late = await asyncio.wait(set(self._writing), timeout=timeout_s)
        if late:
            log.error("%d export closing audit rows were not written before shutdown", len(late))

    async def erase_tenant(self, tenant: str, actor: str) -> EraseResult:
        """Crypto-shred: destroy every data key, then delete every row. Safe to run again after a crash."""
        if await self.store.get_tenant(tenant) is None:
            raise TenantNotFound(tenant)
        await self._audit(tenant, actor, "tenant.erase", tenant, {"phase": "start"})
        destroyed = await self.keys.destroy_tenant_keys(tenant)
        self.keyring.forget(tenant)
        objects = await self.attachments.erase(tenant) if self.attachments is not None else 0
        deleted = await self.keys.erase_tenant(tenant)
        if self.attachments is not None:
            deleted["attachment_objects"] = objects
        details = {"phase": "done", "keys_destroyed": destroyed, "rows_deleted": deleted}
        await self._audit(tenant, actor, "tenant.erase", tenant, details)
        return EraseResult(tenant, destroyed, deleted)

    async def export_user_stream(self, tenant: str, sub: str, actor: str) -> UserExportStream:
        """Every change, dead letter and attachment of ``sub``, decrypted: a ``UserExport`` JSON document, streamed
        piece by piece (see the module docs for its layout, memory and audit rows).

        The tenant's key is loaded and the ``start`` audit row written before this returns, so their failures
        (``TenantNotFound``, a key provider's error) come before any byte of the document.
        """
        await self.keyring.cipher(tenant)
        await self._audit(tenant, actor, "user.export", sub, {"phase": "start"})
        summary = ExportSummary()
        closing = _Closing(self, tenant, sub, actor, summary)
        return UserExportStream(self._export_pieces(tenant, sub, summary, closing), summary, closing)

    async def export_user(self, tenant: str, sub: str, actor: str) -> UserExport:
        """``export_user_stream`` read whole and decoded: all the user's data in memory at once, so only for tools
        that know it is small (``benchmarks/explain_indexes.py``); the CLI and the API stream it."""
        stream = await self.export_user_stream(tenant, sub, actor)
        async with aclosing(stream):
            return msgspec.json.decode(b"".join([piece async for piece in stream]), type=UserExport)

    async def _export_pieces(
        self, tenant: str, sub: str, summary: ExportSummary, closing: _Closing
    ) -> AsyncGenerator[bytes, None]:
        try:
            replicas: set[str] = set()
            head = b'{"tenant":' + _encode(tenant) + b',"sub":' + _encode(sub)
            yield head + b',"exported_at":' + _encode(iso(self.clock())) + b',"changes":['
            async with aclosing(_listed(self._changes(tenant, sub, summary.unavailable), replicas)) as changes:
                async for piece in changes:
                    summary.changes += 1
                    yield piece
            yield b'\n],"dead_letters":['
            async with aclosing(_listed(self._dead_letters(tenant, sub, summary.unavailable), replicas)) as letters:
                async for piece in letters:
                    summary.dead_letters += 1
                    yield piece
            yield b'\n],"attachments":['
            if self.attachments is not None:
                async with aclosing(self.attachments.export(tenant, sub, self.keyring)) as items:
                    async for item in items:
                        async with aclosing(self._attachment(tenant, item, summary)) as pieces:
                            async for piece in pieces:
                                yield piece
            unavailable = _encode(summary.unavailable)
            last = b'\n],"replicas":' + _encode(sorted(replicas)) + b',"unavailable":' + unavailable + b"}"
            summary.complete = True
            # Before the last piece: a client that has the whole document and leaves at once leaves this row.
            await closing.done()
            yield last
        finally:
            await closing.aborted()  # ended early (an error, a client gone, cancelled): unless the counts are in

    async def _attachment(self, tenant: str, item: ExportItem, summary: ExportSummary) -> AsyncGenerator[bytes, None]:
        """One element of ``attachments``: its metadata, then its bytes as base64, chunk by chunk.

        Its first bytes are read before anything of it is written: an attachment deleted by then is left out,
        one whose stored bytes fail by then is listed with ``content_b64`` null and named in ``unavailable``.
        """
        meta, content, failure = item
        encoded = _encode(meta)  # with ``content_b64`` null, last: the bytes, if any, take its place
        if not encoded.endswith(_CONTENT_NULL):
            raise AssertionError(f"an exported attachment must end with content_b64: {encoded[-40:]!r}")
        if content is None:
            async for piece in self._attachment_without_content(tenant, meta, encoded, failure, summary):
                yield piece
            return
        async with aclosing(content):
            try:
                first = await anext(content, b"")
            except AttachmentGone:
                return  # deleted since it was checked, before any of it was written: not the user's any more
            except ChunkError as exc:
                async for piece in self._attachment_without_content(tenant, meta, encoded, exc, summary):
                    yield piece
                return
            separator = _separator(summary.attachments)
            summary.attachments += 1
            yield separator + encoded[: -len(b"null}")] + b'"'
            try:
                async for text in _base64(_then(first, content)):
                    yield text
            except AttachmentGone:
                # Deleted part way: what left is its stored bytes, but the rest cannot follow. Not damage.
                log.warning("attachment deleted while it was exported", extra={"tenant": tenant, "attachment": meta.id})
                raise
            except ChunkError as exc:
                # Changed since its check: stop the stream rather than write bytes that are not the ones stored.
                _attachment_failed(tenant, meta.id, exc)
                raise
            yield b'"}'

    async def _attachment_without_content(
        self,
        tenant: str,
        meta: ExportedAttachment,
        encoded: bytes,
        failure: ChunkError | None,
        summary: ExportSummary,
    ) -> AsyncIterator[bytes]:
        """An attachment listed with ``content_b64`` null: not available, or (``failure``) failed its check."""
        if failure is not None:
            _attachment_failed(tenant, meta.id, failure)
            summary.unavailable.append(f"attachments/{meta.id}")
        separator = _separator(summary.attachments)
        summary.attachments += 1
        yield separator + encoded

    async def _changes(self, tenant: str, sub: str, unavailable: list[str]) -> AsyncGenerator[ExportedChange, None]:
        """The user's changes that open, one at a time, read ``PAGE`` rows at a time (the others are named in
        ``unavailable``). Each page is opened with a cipher holding its rows' key versions: a key rotated while
        the export runs (here or in another process) does not make the rows sealed under it look damaged."""
        after = 0
        while page := await self.keys.changes_by_user(tenant, sub, after, PAGE):
            after = page[-1].seq
            cipher = await self.keyring.cipher(tenant, {c.key_version for c in page})
            for c in page:
                try:
                    ops = payloads.open_ops(cipher, c)
                except DecryptionError as exc:
                    quarantine.failed("changes", tenant, f"{c.collection}/{c.entity_id}@{c.seq}", exc)
                    unavailable.append(f"changes/{c.seq}")
                    continue
                yield ExportedChange(
                    c.seq,
                    c.change_id,
                    c.collection,
                    c.entity_id,
                    c.replica_id,
                    c.n,
                    c.hlc,
                    c.context,
                    iso(c.created_at),
                    ops,
                )

    async def _dead_letters(
        self, tenant: str, sub: str, unavailable: list[str]
    ) -> AsyncGenerator[ExportedDeadLetter, None]:
        """The user's dead letters that open, one at a time, read ``PAGE`` rows at a time (the others are named in
        ``unavailable``), each page with a cipher holding its rows' key versions."""
        before = None
        query = DeadLetterQuery(user=sub)
        while page := await self.audit_log.find_dead_letters(tenant, before, PAGE, query):
            last = page[-1]
            before = (last.created_at, last.replica_id, last.n)
            cipher = await self.keyring.cipher(tenant, {d.key_version for d in page})
            for d in page:
                try:
                    raw = payloads.open_dead_letter(cipher, d.replica_id, d.n, d.change_id, d.key_version, d.payload)
                except DecryptionError as exc:
                    quarantine.failed("dead_letters", tenant, f"{d.replica_id}/{d.n}", exc)
                    unavailable.append(f"dead_letters/{d.replica_id}/{d.n}")
                    continue
                yield ExportedDeadLetter(
                    d.replica_id,
                    d.n,
                    d.change_id,
                    d.collection,
                    d.entity_id,
                    d.code,
                    d.message,
                    d.status,
                    iso(d.created_at),
                    raw,
                )

    async def _audit(self, tenant: str | None, actor: str, action: str, target: str, details: dict[str, Any]) -> None:
        await audit(self.audit_log, self.clock(), tenant, actor, action, target, details)
