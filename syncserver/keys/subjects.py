"""Data-subject requests: erase a tenant (crypto-shredding), export one user's data.

One service behind both the CLI (``syncserver tenant erase``, ``export-user``)
and the admin API (``/v1/admin/tenant/erase``, ``/v1/admin/users/{sub}/export``).
Both are audited with metadata only, like the key operations.

* **erase_tenant**: destroys the tenant's keys first, then deletes its rows.
* **export_user_stream**: every change, dead letter and attachment of one
  ``sub``, decrypted, as the bytes of one JSON document (``UserExport``) made
  piece by piece: memory holds one page of rows or one attachment chunk, never
  the user's whole data (a driver's thousand delivery photos).

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
(``attachments/<id>``). Each attachment's chunks are all checked before its
first byte is written; if they change between that check and the reading that
streams them, the stream stops with ``ChunkError``: a document cut short,
never wrong bytes. The export is audited twice: ``user.export``
``{"phase": "start"}`` before the first byte (data may have left even if the
stream is cut off later), then the counts after the last.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import msgspec
from msgspec import Struct

from syncproto.hlc import iso
from syncproto.messages import Op
from syncserver.attachments import metrics
from syncserver.attachments.chunks import ChunkError
from syncserver.attachments.keyops import AttachmentKeys, ExportedAttachment, ExportItem
from syncserver.integrity import quarantine
from syncserver.keys.envelope import DecryptionError
from syncserver.keys.keyring import TenantCipher, TenantKeyring
from syncserver.keys.operations import PAGE, audit
from syncserver.sync import payloads
from syncstore.adminstore import AdminStore, DeadLetterQuery
from syncstore.keystore import KeyStore
from syncstore.store import Store, TenantNotFound


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
    """What a ``UserExportStream`` has written so far; final once its last piece is out (``complete``)."""

    changes: int = 0
    dead_letters: int = 0
    attachments: int = 0
    unavailable: list[str] = []
    complete: bool = False


class UserExportStream:
    """The bytes of one ``UserExport`` document, piece by piece: ``async for piece in stream``.

    Iterate it once, to the end: the closing audit row is written after the last piece. ``summary`` counts what
    has been written so far (the CLI reports it at the end).
    """

    def __init__(self, pieces: AsyncIterator[bytes], summary: ExportSummary) -> None:
        self._pieces = pieces
        self.summary = summary

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._pieces


_encode = msgspec.json.encode
_CONTENT_NULL = b'"content_b64":null}'


def _elements(encoded: Sequence[bytes], first: bool) -> bytes:
    """Elements continuing a JSON array, each on a line of its own (``first``: none came before them)."""
    return (b"\n" if first else b",\n") + b",\n".join(encoded)


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


def _attachment_failed(tenant: str, attachment_id: str, exc: ChunkError) -> None:
    """Log and count an attachment whose stored chunks failed their check (as a download does, and as a row)."""
    metrics.INTEGRITY_FAILURES.inc()
    quarantine.failed("attachments", tenant, attachment_id, exc)


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
        cipher = await self.keyring.cipher(tenant)
        await self._audit(tenant, actor, "user.export", sub, {"phase": "start"})
        summary = ExportSummary()
        return UserExportStream(self._export_pieces(tenant, sub, actor, cipher, summary), summary)

    async def export_user(self, tenant: str, sub: str, actor: str) -> UserExport:
        """``export_user_stream`` read whole and decoded: all the user's data in memory at once, so only for tools
        that know it is small (``benchmarks/explain_indexes.py``); the CLI and the API stream it."""
        stream = await self.export_user_stream(tenant, sub, actor)
        return msgspec.json.decode(b"".join([piece async for piece in stream]), type=UserExport)

    async def _export_pieces(
        self, tenant: str, sub: str, actor: str, cipher: TenantCipher, summary: ExportSummary
    ) -> AsyncIterator[bytes]:
        replicas: set[str] = set()
        head = b'{"tenant":' + _encode(tenant) + b',"sub":' + _encode(sub)
        yield head + b',"exported_at":' + _encode(iso(self.clock())) + b',"changes":['
        async for changes in self._changes(tenant, sub, cipher, summary.unavailable):
            yield _elements([_encode(c) for c in changes], summary.changes == 0)
            summary.changes += len(changes)
            replicas.update(c.replica for c in changes)
        yield b'\n],"dead_letters":['
        async for letters in self._dead_letters(tenant, sub, cipher, summary.unavailable):
            yield _elements([_encode(d) for d in letters], summary.dead_letters == 0)
            summary.dead_letters += len(letters)
            replicas.update(d.replica for d in letters)
        yield b'\n],"attachments":['
        if self.attachments is not None:
            async for item in self.attachments.export(tenant, sub, cipher):
                async for piece in self._attachment(tenant, item, summary):
                    yield piece
        yield b'\n],"replicas":' + _encode(sorted(replicas)) + b',"unavailable":' + _encode(summary.unavailable) + b"}"
        summary.complete = True
        details = {"changes": summary.changes, "dead_letters": summary.dead_letters}
        if summary.attachments:
            details["attachments"] = summary.attachments
        if summary.unavailable:
            details["unavailable"] = len(summary.unavailable)
        await self._audit(tenant, actor, "user.export", sub, details)

    async def _attachment(self, tenant: str, item: ExportItem, summary: ExportSummary) -> AsyncIterator[bytes]:
        """One element of ``attachments``: its metadata, then its bytes as base64, chunk by chunk."""
        meta, content, failure = item
        encoded = _encode(meta)  # with ``content_b64`` null, last: the bytes, if any, take its place
        if not encoded.endswith(_CONTENT_NULL):
            raise AssertionError(f"an exported attachment must end with content_b64: {encoded[-40:]!r}")
        separator = b"\n" if summary.attachments == 0 else b",\n"
        summary.attachments += 1
        if failure is not None:
            _attachment_failed(tenant, meta.id, failure)
            summary.unavailable.append(f"attachments/{meta.id}")
        if content is None:
            yield separator + encoded
            return
        yield separator + encoded[: -len(b"null}")] + b'"'
        try:
            async for text in _base64(content):
                yield text
        except ChunkError as exc:
            # Changed since its check: stop the stream rather than write bytes that are not the ones stored.
            _attachment_failed(tenant, meta.id, exc)
            raise
        yield b'"}'

    async def _changes(
        self, tenant: str, sub: str, cipher: TenantCipher, unavailable: list[str]
    ) -> AsyncIterator[list[ExportedChange]]:
        """The user's changes that open, a page at a time (the others are named in ``unavailable``)."""
        after = 0
        while page := await self.keys.changes_by_user(tenant, sub, after, PAGE):
            found: list[ExportedChange] = []
            for c in page:
                try:
                    ops = payloads.open_ops(cipher, c)
                except DecryptionError as exc:
                    quarantine.failed("changes", tenant, f"{c.collection}/{c.entity_id}@{c.seq}", exc)
                    unavailable.append(f"changes/{c.seq}")
                    continue
                found.append(
                    ExportedChange(
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
                )
            if found:
                yield found
            after = page[-1].seq

    async def _dead_letters(
        self, tenant: str, sub: str, cipher: TenantCipher, unavailable: list[str]
    ) -> AsyncIterator[list[ExportedDeadLetter]]:
        """The user's dead letters that open, a page at a time (the others are named in ``unavailable``)."""
        before = None
        query = DeadLetterQuery(user=sub)
        while page := await self.audit_log.find_dead_letters(tenant, before, PAGE, query):
            found: list[ExportedDeadLetter] = []
            for d in page:
                try:
                    raw = payloads.open_dead_letter(cipher, d.replica_id, d.n, d.change_id, d.key_version, d.payload)
                except DecryptionError as exc:
                    quarantine.failed("dead_letters", tenant, f"{d.replica_id}/{d.n}", exc)
                    unavailable.append(f"dead_letters/{d.replica_id}/{d.n}")
                    continue
                found.append(
                    ExportedDeadLetter(
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
                )
            if found:
                yield found
            last = page[-1]
            before = (last.created_at, last.replica_id, last.n)

    async def _audit(self, tenant: str | None, actor: str, action: str, target: str, details: dict[str, Any]) -> None:
        await audit(self.audit_log, self.clock(), tenant, actor, action, target, details)
