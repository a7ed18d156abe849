"""Attachments in the SDK: attach a file offline, upload it in the background (tus), fetch on demand.

Usage::

    files = Attachments(client, "app-data/attachments", on_progress=lambda i, sent, total: ...)
    ref = files.attach("deliveries", "dlv-123", "pod_photo", "/tmp/camera/IMG_0042.jpg", "image/jpeg")
    # the file is copied and fsynced, and the reference is in the outbox, when attach() returns
    files.start()                      # uploads in the background, resuming after any interruption
    path = await files.fetch(ref)      # the bytes, from the local copy or downloaded into the cache

Local layout under ``directory``: ``files/<id>`` (copies waiting to upload: the
durable store), ``cache/<id>`` (uploaded or downloaded files, at most
``cache_bytes``, least recently used first out) and ``queue.db`` (SQLite: one row
per attachment to upload).

The upload speaks tus 1.0 over the SDK's own ``httpx`` client (see ADR 0014):
create (idempotent: the URL is the attachment id) carrying the first chunk
(creation-with-upload: a photo of one chunk takes one request), ``HEAD`` for
the offset after any interruption, then ``PATCH`` chunks; every body has a
``sha1`` ``Upload-Checksum``. A creation this process already sent is resumed
without data, so a resumed upload does not send its first chunk twice. A refused upload (``attachment_too_large``,
``media_type_not_allowed``, ``attachment_hash_mismatch``) is marked ``refused``
with its code and the queue goes on with the next one; nothing blocks behind it.

Pitfalls:

* ``attach`` blocks while it copies the file (it must be on disk before it
  returns); call it from a worker thread for very large files.
* A fetched attachment is verified against the reference's SHA-256 before it
  is handed out; a mismatch raises ``ServerError`` with ``data_integrity``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import httpx
import msgspec

from syncclient.backoff import Backoff
from syncclient.errors import ServerError, SyncError, TransportError
from syncproto import errors
from syncproto.attachments import AttachmentRef
from syncproto.messages import ErrorResponse

if TYPE_CHECKING:
    from syncclient.client import SyncClient

__all__ = ["Attachments", "Progress", "UploadState"]

Progress = Callable[[str, int, int], None]
"""Called with (attachment id, bytes the server has, total bytes) as an upload advances."""

TUS = {"Tus-Resumable": "1.0.0"}
UPLOADS = "/v1/attachments/uploads"
REFUSALS = frozenset({*errors.ATTACHMENT_REFUSALS, errors.ATTACHMENT_CONFLICT})
_COPY = 1 << 20
_error_decoder = msgspec.json.Decoder(ErrorResponse)


@dataclass(frozen=True)
class UploadState:
    id: str
    state: str
    """``pending`` (queued or in progress), ``uploaded`` or ``refused``."""
    code: str | None = None
    message: str | None = None


class Attachments:
    """Attachment files of one ``SyncClient`` (see the module docs)."""

    def __init__(
        self,
        client: SyncClient,
        directory: str | Path,
        *,
        url: str | None = None,
        token: str | Callable[[], str] | None = None,
        http: httpx.AsyncClient | None = None,
        chunk_size: int = 1 << 20,
        cache_bytes: int = 256 << 20,
        on_progress: Progress | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.client = client
        self.dir = Path(directory)
        self.url = (url or client.url or "").rstrip("/")
        self._token = token if token is not None else (lambda: client.token or "")
        self._http = http or httpx.AsyncClient(timeout=60.0)
        self._owns_http = http is None
        self.chunk_size = chunk_size
        self.cache_bytes = cache_bytes
        self.on_progress = on_progress
        self._created: set[str] = set()
        """Uploads whose creation the server answered in this process: resumed without data."""
        self._backoff = backoff or Backoff()
        for sub in ("files", "cache", "tmp"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.dir / "queue.db", isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS uploads (id TEXT PRIMARY KEY, size INTEGER NOT NULL, sha256 TEXT NOT NULL,"
            " media_type TEXT NOT NULL, state TEXT NOT NULL, code TEXT, message TEXT, seq INTEGER NOT NULL)"
        )
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # --- attaching ----------------------------------------------------------------

    def attach(
        self,
        collection: str,
        entity: str,
        field: str,
        source: str | Path | bytes | BinaryIO,
        media_type: str,
        *,
        name: str | None = None,
    ) -> AttachmentRef:
        """Copy ``source`` into the durable store, queue its upload and write the reference (a ``set``).

        Everything is on disk when this returns; the upload happens later (``upload_pending`` or ``start``).
        """
        attachment_id = str(uuid.uuid4())
        size, digest = self._store_copy(attachment_id, source)
        if name is None and isinstance(source, str | Path):
            name = Path(source).name[:255]
        ref = AttachmentRef(id=attachment_id, size=size, sha256=digest, media_type=media_type.lower(), name=name)
        self._db.execute(
            "INSERT INTO uploads (id, size, sha256, media_type, state, seq) VALUES (?, ?, ?, ?, 'pending',"
            " (SELECT COALESCE(MAX(seq), 0) + 1 FROM uploads))",
            (ref.id, ref.size, ref.sha256, ref.media_type),
        )
        self.client.collection(collection).set(entity, field, ref.to_value())
        if self._wake is not None:
            self._wake.set()
        return ref

    def _store_copy(self, attachment_id: str, source: str | Path | bytes | BinaryIO) -> tuple[int, str]:
        tmp = self.dir / "tmp" / attachment_id
        sha = hashlib.sha256()
        size = 0
        with tmp.open("wb") as out:
            for piece in _pieces(source):
                sha.update(piece)
                size += len(piece)
                out.write(piece)
            out.flush()
            os.fsync(out.fileno())
        final = self.dir / "files" / attachment_id
        tmp.replace(final)
        _fsync_dir(final.parent)
        return size, sha.hexdigest()

    def status(self, attachment_id: str) -> UploadState | None:
        row = self._db.execute("SELECT state, code, message FROM uploads WHERE id = ?", (attachment_id,)).fetchone()
        return None if row is None else UploadState(attachment_id, row[0], row[1], row[2])

    def pending(self) -> list[str]:
        rows = self._db.execute("SELECT id FROM uploads WHERE state = 'pending' ORDER BY seq").fetchall()
        return [r[0] for r in rows]

    # --- uploading ------------------------------------------------------------------

    async def upload_pending(self) -> list[UploadState]:
        """Upload every queued file, in order; a refused one is marked and skipped. Returns their end states.

        Raises ``TransportError``/``ServerError`` (retryable) when the server cannot be reached; what was
        sent stays sent, and the next call resumes from the server's offset.
        """
        done = []
        for attachment_id in self.pending():
            done.append(await self._upload(attachment_id))
        return done

    async def _upload(self, attachment_id: str) -> UploadState:
        size, sha256, media_type = self._db.execute(
            "SELECT size, sha256, media_type FROM uploads WHERE id = ?", (attachment_id,)
        ).fetchone()
        metadata = {"id": attachment_id, "sha256": sha256, "media_type": media_type}
        meta = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in metadata.items())
        headers = {"Upload-Length": str(size), "Upload-Metadata": meta}
        url = f"{UPLOADS}/{attachment_id}"
        path = self.dir / "files" / attachment_id
        with path.open("rb") as f:
            first = None
            if attachment_id not in self._created and size:
                first = f.read(self.chunk_size)
                headers.update(_body_headers(first))
            created = await self._request("POST", UPLOADS, headers, first, expect=(201, 460), upload=attachment_id)
            if isinstance(created, UploadState):
                return created
            self._created.add(attachment_id)
            if created.status_code == 201:
                offset = int(created.headers["upload-offset"])
                if first and self.on_progress is not None:
                    self.on_progress(attachment_id, offset, size)
            else:  # the first chunk arrived damaged: the upload exists, ask where it is
                head = await self._request("HEAD", url, {}, expect=(200,), upload=attachment_id)
                if isinstance(head, UploadState):
                    return head
                offset = int(head.headers["upload-offset"])
            while offset < size:
                f.seek(offset)
                chunk = f.read(self.chunk_size)
                headers = {"Upload-Offset": str(offset), **_body_headers(chunk)}
                answer = await self._request("PATCH", url, headers, chunk, expect=(204, 409, 460), upload=attachment_id)
                if isinstance(answer, UploadState):
                    return answer
                if answer.status_code == 204:
                    offset = int(answer.headers["upload-offset"])
                    if self.on_progress is not None:
                        self.on_progress(attachment_id, offset, size)
                else:  # someone moved the offset, or the chunk arrived damaged: ask where we are
                    head = await self._request("HEAD", url, {}, expect=(200,), upload=attachment_id)
                    if isinstance(head, UploadState):
                        return head
                    offset = int(head.headers["upload-offset"])
        return self._finished(attachment_id, "uploaded")

    def _headers(self, headers: dict[str, str]) -> dict[str, str]:
        token = self._token() if callable(self._token) else self._token
        return {**TUS, **headers, "Authorization": f"Bearer {token}"}

    async def _request(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None = None,
        *,
        expect: tuple[int, ...],
        upload: str,
    ) -> httpx.Response | UploadState:
        """One tus request; a refusal of ``upload`` marks it refused (returned as its ``UploadState``)."""
        try:
            response = await self._http.request(method, self.url + path, content=body, headers=self._headers(headers))
        except httpx.TransportError as exc:
            raise TransportError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code in expect:
            return response
        code, message = _error(response)
        if code in REFUSALS:
            return self._finished(upload, "refused", code, message)
        raise ServerError(response.status_code, code, message)

    def _finished(
        self, attachment_id: str, state: str, code: str | None = None, message: str | None = None
    ) -> UploadState:
        self._db.execute(
            "UPDATE uploads SET state = ?, code = ?, message = ? WHERE id = ?", (state, code, message, attachment_id)
        )
        source = self.dir / "files" / attachment_id
        if state == "uploaded" and source.exists():
            source.replace(self.dir / "cache" / attachment_id)  # the local copy now only serves reads
            self._evict()
        return UploadState(attachment_id, state, code, message)

    # --- background -------------------------------------------------------------------

    def start(self) -> None:
        """Upload in the background (call from a running event loop) until ``stop()``."""
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        """Try now (for example when the network is back)."""
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            try:
                await self.upload_pending()
                self._backoff.reset()
                await self._wake.wait()
            except SyncError:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._backoff.next())

    # --- fetching -----------------------------------------------------------------------

    async def fetch(self, ref: AttachmentRef) -> Path:
        """A local file with the attachment's bytes: the not-yet-uploaded copy, the cache, or a download.

        Raises ``ServerError`` (404 ``not_found`` while it is not available to this token) or ``TransportError``.
        """
        for place in ("files", "cache"):
            local = self.dir / place / ref.id
            if local.exists():
                os.utime(local)
                return local
        tmp = self.dir / "tmp" / f"{ref.id}.download"
        have = tmp.stat().st_size if tmp.exists() else 0
        if have < ref.size or ref.size == 0:
            await self._download(ref, tmp, have)
        if _sha256_of(tmp) != ref.sha256:
            tmp.unlink()
            raise ServerError(500, errors.DATA_INTEGRITY, "downloaded bytes do not match the reference's SHA-256")
        final = self.dir / "cache" / ref.id
        tmp.replace(final)
        self._evict(keep=ref.id)
        return final

    async def _download(self, ref: AttachmentRef, tmp: Path, have: int) -> None:
        """Stream the bytes into ``tmp``, continuing after the ``have`` bytes an interrupted fetch left."""
        headers = self._headers({"Range": f"bytes={have}-"} if have else {})
        path = f"/v1/attachments/{ref.id}"
        try:
            async with self._http.stream("GET", self.url + path, headers=headers) as response:
                if response.status_code not in (200, 206):
                    await response.aread()
                    code, message = _error(response)
                    raise ServerError(response.status_code, code, message)
                with tmp.open("ab" if response.status_code == 206 else "wb") as out:
                    async for piece in response.aiter_bytes():
                        out.write(piece)
        except httpx.TransportError as exc:
            raise TransportError(f"GET {path}: {type(exc).__name__}: {exc}") from exc

    def _evict(self, keep: str | None = None) -> None:
        files = sorted((p.stat().st_mtime, p) for p in (self.dir / "cache").iterdir() if p.is_file())
        total = sum(p.stat().st_size for _, p in files)
        for _, path in files:
            if total <= self.cache_bytes:
                break
            if path.name != keep:
                total -= path.stat().st_size
                path.unlink()

    async def aclose(self) -> None:
        await self.stop()
        if self._owns_http:
            await self._http.aclose()
        self._db.close()


def _pieces(source: str | Path | bytes | BinaryIO) -> list[bytes] | BinaryIOIter:
    if isinstance(source, bytes):
        return [source]
    if isinstance(source, str | Path):
        return BinaryIOIter(Path(source).open("rb"), close=True)
    return BinaryIOIter(source, close=False)


class BinaryIOIter:
    def __init__(self, f: BinaryIO, *, close: bool) -> None:
        self.f = f
        self.close = close

    def __iter__(self) -> BinaryIOIter:
        return self

    def __next__(self) -> bytes:
        piece = self.f.read(_COPY)
        if not piece:
            if self.close:
                self.f.close()
            raise StopIteration
        return piece


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256_of(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(_COPY):
            sha.update(piece)
    return sha.hexdigest()


def _body_headers(body: bytes) -> dict[str, str]:
    """The headers of a tus request carrying upload bytes: content type and a ``sha1`` checksum."""
    digest = base64.b64encode(hashlib.sha1(body).digest()).decode()  # noqa: S324 - tus checksum
    return {"Content-Type": "application/offset+octet-stream", "Upload-Checksum": f"sha1 {digest}"}


def _error(response: httpx.Response) -> tuple[str, str]:
    try:
        body = _error_decoder.decode(response.content).error
        return body.code, body.message
    except msgspec.DecodeError:
        return f"http_{response.status_code}", response.text[:200]
