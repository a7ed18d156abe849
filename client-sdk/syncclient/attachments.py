"""Attachments in the SDK: attach a file offline, upload it in the background (tus), fetch on demand.

Usage::

    files = Attachments(client, "app-data/attachments", on_progress=lambda i, sent, total: ...)
    ref = files.attach("deliveries", "dlv-123", "pod_photo", "/tmp/camera/IMG_0042.jpg", "image/jpeg")
    # the file is copied and fsynced, and the reference is in the outbox, when attach() returns
    files.start()                      # uploads in the background, resuming after any interruption
    path = await files.fetch(ref)      # the bytes, from the local copy or downloaded into the cache

Local layout under ``directory``: ``files/<id>`` (copies waiting to upload: the
durable store), ``cache/<id>`` (uploaded or downloaded files, at most
``cache_bytes``, least recently used first out), ``tmp/`` (copies being made and
partial downloads, ``<id>.<random>.download``; counted against ``cache_bytes``,
dropped at startup) and ``queue.db`` (SQLite: one row per attachment to upload).

The upload speaks tus 1.0 over the SDK's own ``httpx`` client (see ADR 0014):
create (idempotent: the URL is the attachment id) carrying the first chunk
(creation-with-upload: a photo of one chunk takes one request), ``HEAD`` for
the offset after any interruption, then ``PATCH`` chunks; every body has a
``sha1`` ``Upload-Checksum``. A creation this process already sent is resumed
without data, so a resumed upload does not send its first chunk twice.

Nothing blocks the queue behind one file:

* a refused upload (``attachment_too_large``, ``media_type_not_allowed``,
  ``attachment_hash_mismatch``, ``attachment_conflict``) is marked ``refused``;
* any other 4xx but 401, 408, 409 and 429 (the server will never take this
  request: ``invalid_request``, ``forbidden``, ...) marks it ``failed``, as does a
  local copy that is gone; both are terminal (``status(id)`` has the code);
* a network error, a 5xx, 401, 408, 409, 410 (an expired upload, created again)
  or 429 leaves it ``pending``: the pass goes on with the next file, and the
  background loop retries this one later with its own backoff.

Pitfalls:

* ``attach`` blocks while it copies the file (it must be on disk before it
  returns); call it from a worker thread for very large files (it wakes the
  background uploader safely from there).
* ``attach`` raises ``ValueError`` for a reference or a change the server would
  refuse (a media type such as ``"image/jpeg; quality=90"``, a bad entity id),
  and then queues nothing and keeps no copy.
* A fetched attachment is verified against the reference's SHA-256 before it
  is handed out; a mismatch raises ``ServerError`` with ``data_integrity``.
  Concurrent fetches of one id share one download.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import httpx
import msgspec

from syncclient.backoff import Backoff
from syncclient.errors import ServerError, TransportError
from syncproto import errors
from syncproto.attachments import AttachmentRef
from syncproto.messages import ErrorResponse

if TYPE_CHECKING:
    from syncclient.client import SyncClient

__all__ = ["Attachments", "Progress", "UploadState"]

log = logging.getLogger("syncclient")

Progress = Callable[[str, int, int], None]
"""Called with (attachment id, bytes the server has, total bytes) as an upload advances."""

TUS = {"Tus-Resumable": "1.0.0"}
UPLOADS = "/v1/attachments/uploads"
REFUSALS = frozenset({*errors.ATTACHMENT_REFUSALS, errors.ATTACHMENT_CONFLICT})
TRANSIENT_4XX = frozenset({401, 408, 409, 410, 429})
"""4xx answers worth retrying: a token to refresh, a timeout, a moved offset, an expired upload, a rate limit."""
FILE_MISSING = "file_missing"
"""The code of an upload marked ``failed`` because its local copy is gone."""
NETWORK_DOWN_AFTER = 3
"""Uploads in a row that got no answer at all before a pass stops (the network is down, not the file)."""
_COPY = 1 << 20
_PARTIAL = ".download"
_error_decoder = msgspec.json.Decoder(ErrorResponse)


@dataclass(frozen=True)
class UploadState:
    id: str
    state: str
    """``pending`` (queued, in progress or waiting to retry), ``uploaded``, ``refused`` (the server refused the
    file) or ``failed`` (it can never be sent: a permanent 4xx, or the local copy is gone)."""
    code: str | None = None
    message: str | None = None


class _Failed(Exception):
    """An upload the server will never take as sent (a permanent 4xx): mark it ``failed``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class _Retry:
    backoff: Backoff
    due: float


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
        self._retries: dict[str, _Retry] = {}
        """Uploads a transient error left pending, with when the background loop tries each again."""
        self._downloads: dict[str, asyncio.Task[Path]] = {}
        """One download per id in flight, shared by concurrent ``fetch`` calls."""
        self._reserved: dict[str, int] = {}
        """Bytes each download in flight will take in ``tmp/`` (counted against ``cache_bytes``)."""
        for sub in ("files", "cache", "tmp"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self._clean_tmp()
        self._lock = threading.RLock()  # queue.db is used from the loop and from threads that attach
        self._db = sqlite3.connect(self.dir / "queue.db", isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS uploads (id TEXT PRIMARY KEY, size INTEGER NOT NULL, sha256 TEXT NOT NULL,"
            " media_type TEXT NOT NULL, state TEXT NOT NULL, code TEXT, message TEXT, seq INTEGER NOT NULL)"
        )
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def _sql(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _clean_tmp(self) -> None:
        """At startup nothing is in flight: copies an ``attach`` left half made, and partial downloads, are stale."""
        for path in (self.dir / "tmp").iterdir():
            with contextlib.suppress(OSError):
                path.unlink()

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
        Raises ``ValueError`` (and keeps nothing) for a reference or a change the server would refuse.
        Safe to call from a worker thread.
        """
        attachment_id = str(uuid.uuid4())
        if name is None and isinstance(source, str | Path):
            name = Path(source).name[:255]
        media_type = media_type.lower()
        _checked_ref(attachment_id, 0, "0" * 64, media_type, name)  # before copying a large file for nothing
        size, digest = self._store_copy(attachment_id, source)
        copy = self.dir / "files" / attachment_id
        try:
            ref = _checked_ref(attachment_id, size, digest, media_type, name)
            # The upload row is committed before the reference (a crash between them uploads bytes nobody
            # references, never leaves a reference whose bytes never come). The queue's lock keeps the
            # uploader from seeing the row until the reference is committed, or the row is gone again; the
            # client's lock is taken first, the order every path takes them in.
            with self.client.store._lock, self._lock, self.client.batch():
                self._db.execute(
                    "INSERT INTO uploads (id, size, sha256, media_type, state, seq) VALUES (?, ?, ?, ?,"
                    " 'pending', (SELECT COALESCE(MAX(seq), 0) + 1 FROM uploads))",
                    (ref.id, ref.size, ref.sha256, ref.media_type),
                )
                self.client.collection(collection).set(entity, field, ref.to_value())
        except BaseException:
            # No reference was written (a bad id, a change too large): the upload must not go, nor the copy stay.
            self._sql("DELETE FROM uploads WHERE id = ?", (attachment_id,))
            copy.unlink(missing_ok=True)
            raise
        self.wake()
        return ref

    def _store_copy(self, attachment_id: str, source: str | Path | bytes | BinaryIO) -> tuple[int, str]:
        tmp = self.dir / "tmp" / attachment_id
        sha = hashlib.sha256()
        size = 0
        try:
            with tmp.open("wb") as out:
                for piece in _pieces(source):
                    sha.update(piece)
                    size += len(piece)
                    out.write(piece)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        final = self.dir / "files" / attachment_id
        tmp.replace(final)
        _fsync_dir(final.parent)
        return size, sha.hexdigest()

    def status(self, attachment_id: str) -> UploadState | None:
        """Where this device's upload of the attachment stands (``None`` if it never queued it)."""
        rows = self._sql("SELECT state, code, message FROM uploads WHERE id = ?", (attachment_id,))
        return None if not rows else UploadState(attachment_id, rows[0][0], rows[0][1], rows[0][2])

    def pending(self) -> list[str]:
        rows = self._sql("SELECT id FROM uploads WHERE state = 'pending' ORDER BY seq")
        return [r[0] for r in rows]

    def retry(self, attachment_id: str) -> UploadState:
        """Queue a ``refused`` or ``failed`` upload again, at the end of the queue (after an admin replayed it on
        the server, or after what made it fail was fixed). Its local copy must still be there; ``ValueError``
        for an upload that is not refused or failed, or whose copy is gone."""
        with self._lock:
            found = self._db.execute("SELECT state FROM uploads WHERE id = ?", (attachment_id,)).fetchone()
            if found is None or found[0] not in ("refused", "failed"):
                raise ValueError(f"upload {attachment_id} is not refused or failed: {found and found[0]}")
            if not (self.dir / "files" / attachment_id).exists():
                raise ValueError(f"the local copy of upload {attachment_id} is gone: it cannot be sent again")
            self._db.execute(
                "UPDATE uploads SET state = 'pending', code = NULL, message = NULL,"
                " seq = (SELECT MAX(seq) + 1 FROM uploads) WHERE id = ?",
                (attachment_id,),
            )
        self._created.discard(attachment_id)  # ask the server afresh (its row may have been replayed)
        self.wake()
        return UploadState(attachment_id, "pending")

    def discard(self, attachment_id: str) -> None:
        """Forget a ``refused`` or ``failed`` upload and delete its local copy (its bytes never reach the
        server; a reference to it stays as the entity holds it). ``ValueError`` for any other state: a queued
        file's reference has synced, so its bytes must follow."""
        with self._lock:
            found = self._db.execute("SELECT state FROM uploads WHERE id = ?", (attachment_id,)).fetchone()
            if found is None or found[0] not in ("refused", "failed"):
                raise ValueError(f"upload {attachment_id} is not refused or failed: {found and found[0]}")
            self._db.execute("DELETE FROM uploads WHERE id = ?", (attachment_id,))
        (self.dir / "files" / attachment_id).unlink(missing_ok=True)

    # --- uploading ------------------------------------------------------------------

    async def upload_pending(self) -> list[UploadState]:
        """Upload every queued file, in order. Returns their states after this pass.

        A refused or failed file is marked and the pass goes on. So does one that hit a
        transient error (the network, a 5xx, 429, ...): it stays ``pending``, the files
        after it are still tried, and at the end the first such error is raised
        (``TransportError``/``ServerError``); what was sent stays sent, and the next call
        resumes from the server's offset.
        """
        states, error = await self._pass(due_only=False)
        if error is not None:
            raise error
        return states

    async def _pass(self, *, due_only: bool) -> tuple[list[UploadState], BaseException | None]:
        """One pass over the queue; ``due_only`` skips files whose retry delay has not run out."""
        done: list[UploadState] = []
        first_error: BaseException | None = None
        silent = 0
        for attachment_id in self.pending():
            retry = self._retries.get(attachment_id)
            if due_only and retry is not None and retry.due > time.monotonic():
                continue
            try:
                state = await self._upload(attachment_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._schedule_retry(attachment_id, exc)
                done.append(UploadState(attachment_id, "pending", _code_of(exc), str(exc)))
                first_error = first_error or exc
                silent = silent + 1 if isinstance(exc, TransportError) else 0
                if silent >= NETWORK_DOWN_AFTER:
                    break  # nothing reaches the server: the rest waits for the next pass
                continue
            silent = 0
            self._retries.pop(attachment_id, None)
            done.append(state)
        return done, first_error

    def _schedule_retry(self, attachment_id: str, exc: Exception) -> None:
        if isinstance(exc, TransportError | ServerError):
            log.info("upload of %s failed (%s); retried later", attachment_id, exc)
        else:
            log.error("upload of %s failed; retried later", attachment_id, exc_info=exc)
        retry = self._retries.get(attachment_id)
        if retry is None:
            b = self._backoff
            retry = self._retries[attachment_id] = _Retry(Backoff(b.base, b.cap, b.rng), 0.0)
        if isinstance(exc, ServerError) and exc.retry_after is not None:
            delay = retry.backoff.retry_after(exc.retry_after)
        else:
            delay = retry.backoff.next()
        retry.due = time.monotonic() + delay

    async def _upload(self, attachment_id: str) -> UploadState:
        rows = self._sql("SELECT size, sha256, media_type FROM uploads WHERE id = ?", (attachment_id,))
        size, sha256, media_type = rows[0]
        path = self.dir / "files" / attachment_id
        if not path.exists():
            return self._finished(attachment_id, "failed", FILE_MISSING, f"the local copy {path} is gone")
        try:
            try:
                return await self._send(attachment_id, path, size, sha256, media_type)
            except ServerError as exc:
                if exc.status != 410:
                    raise
                # Expired (or refused) on the server: create it again now; a refusal answers its code.
                return await self._send(attachment_id, path, size, sha256, media_type)
        except _Failed as exc:
            log.warning("upload of %s failed for good: %s", attachment_id, exc)
            return self._finished(attachment_id, "failed", exc.code, exc.message)

    async def _send(self, attachment_id: str, path: Path, size: int, sha256: str, media_type: str) -> UploadState:
        metadata = {"id": attachment_id, "sha256": sha256, "media_type": media_type}
        meta = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in metadata.items())
        headers = {"Upload-Length": str(size), "Upload-Metadata": meta}
        url = f"{UPLOADS}/{attachment_id}"
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
                if first:
                    self._progress(attachment_id, offset, size)
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
                    self._progress(attachment_id, offset, size)
                else:  # someone moved the offset, or the chunk arrived damaged: ask where we are
                    head = await self._request("HEAD", url, {}, expect=(200,), upload=attachment_id)
                    if isinstance(head, UploadState):
                        return head
                    offset = int(head.headers["upload-offset"])
        return self._finished(attachment_id, "uploaded")

    def _progress(self, attachment_id: str, sent: int, total: int) -> None:
        """Tell the app; its callback failing never stops an upload."""
        if self.on_progress is None:
            return
        try:
            self.on_progress(attachment_id, sent, total)
        except Exception:
            log.exception("on_progress callback %r failed for %s", self.on_progress, attachment_id)

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
        """One tus request; a refusal of ``upload`` marks it refused (returned as its ``UploadState``).

        Raises ``_Failed`` for a permanent 4xx, ``ServerError`` for a transient answer, ``TransportError``.
        """
        try:
            response = await self._http.request(method, self.url + path, content=body, headers=self._headers(headers))
        except httpx.TransportError as exc:
            raise TransportError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code in expect:
            return response
        code, message = _error(response)
        if code in REFUSALS:
            return self._finished(upload, "refused", code, message)
        if 400 <= response.status_code < 500 and response.status_code not in TRANSIENT_4XX:
            raise _Failed(code, f"{method} {path} answered {response.status_code}: {message}")
        if response.status_code == 410:
            self._created.discard(upload)  # expired: create it again, with its first chunk
        raise ServerError(response.status_code, code, message, retry_after=_retry_after(response))

    def _finished(
        self, attachment_id: str, state: str, code: str | None = None, message: str | None = None
    ) -> UploadState:
        self._sql(
            "UPDATE uploads SET state = ?, code = ?, message = ? WHERE id = ?", (state, code, message, attachment_id)
        )
        self._retries.pop(attachment_id, None)
        source = self.dir / "files" / attachment_id
        if state == "uploaded" and source.exists():
            source.replace(self.dir / "cache" / attachment_id)  # the local copy now only serves reads
            self._evict()
        return UploadState(attachment_id, state, code, message)

    # --- background -------------------------------------------------------------------

    def start(self) -> None:
        """Upload in the background (call from a running event loop) until ``stop()``."""
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self._wake = None
            self._loop = None

    def wake(self) -> None:
        """Try now (for example when the network is back). Safe from any thread."""
        loop, event = self._loop, self._wake
        if loop is None or event is None or loop.is_closed():
            return
        try:
            same_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            same_loop = False
        if same_loop:
            event.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(event.set)

    async def _run(self) -> None:
        assert self._wake is not None
        wake = self._wake
        while True:
            wake.clear()
            delay: float | None
            try:
                _, error = await self._pass(due_only=True)
                if error is None:
                    self._backoff.reset()
                # Wait for new work, or for the first file whose retry delay runs out.
                dues = [r.due for r in self._retries.values()]
                delay = max(0.0, min(dues) - time.monotonic()) if dues else None
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the attachment uploader failed; trying again later")
                delay = self._backoff.next()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), delay)

    # --- fetching -----------------------------------------------------------------------

    async def fetch(self, ref: AttachmentRef) -> Path:
        """A local file with the attachment's bytes: the not-yet-uploaded copy, the cache, or a download.

        Concurrent calls for one id share one download. Raises ``ServerError`` (404 ``not_found``
        while it is not available to this token) or ``TransportError``.
        """
        for place in ("files", "cache"):
            local = self.dir / place / ref.id
            if local.exists():
                os.utime(local)
                return local
        task = self._downloads.get(ref.id)
        if task is None:
            task = asyncio.ensure_future(self._fetch_once(ref))
            self._downloads[ref.id] = task
            task.add_done_callback(lambda t: self._forget_download(ref.id, t))
        # One caller giving up (cancelled) does not cancel the others' download.
        return await asyncio.shield(task)

    def _forget_download(self, attachment_id: str, task: asyncio.Task[Path]) -> None:
        if self._downloads.get(attachment_id) is task:
            del self._downloads[attachment_id]
        if not task.cancelled():
            task.exception()  # retrieved: a failure every caller already saw is not "never retrieved"

    async def _fetch_once(self, ref: AttachmentRef) -> Path:
        tmp = self._claim_partial(ref.id)
        have = tmp.stat().st_size if tmp.exists() else 0
        if have > ref.size:
            tmp.unlink()
            have = 0
        self._reserved[ref.id] = ref.size
        try:
            self._evict(keep=ref.id)  # room for the bytes on their way
            if have < ref.size or ref.size == 0:
                await self._download(ref, tmp, have)
            if _sha256_of(tmp) != ref.sha256:
                tmp.unlink()
                raise ServerError(500, errors.DATA_INTEGRITY, "downloaded bytes do not match the reference's SHA-256")
            final = self.dir / "cache" / ref.id
            tmp.replace(final)
        finally:
            del self._reserved[ref.id]
        self._evict(keep=ref.id)
        return final

    def _claim_partial(self, attachment_id: str) -> Path:
        """A fresh, unique temp name for a download of ``attachment_id``, holding what an interrupted one left."""
        fresh = self.dir / "tmp" / f"{attachment_id}.{uuid.uuid4().hex}{_PARTIAL}"
        for old in sorted((self.dir / "tmp").glob(f"{attachment_id}.*{_PARTIAL}")):
            if _partial_owner(old.name) != attachment_id:
                continue  # another id that starts with this one and a dot
            try:
                old.rename(fresh)  # atomic: a concurrent claim of the same file gets FileNotFoundError
            except FileNotFoundError:
                continue
            break
        return fresh

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
        """Keep ``cache/`` plus partial downloads within ``cache_bytes``, counting downloads in flight at their full
        size: partial downloads nobody is continuing go first, then cached files, least recently used first."""
        total = sum(self._reserved.values())
        candidates: list[tuple[int, float, Path, int]] = []
        for path in (self.dir / "tmp").glob(f"*{_PARTIAL}"):
            owner = _partial_owner(path.name)
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                if owner in self._reserved:
                    continue  # in flight: counted at its full size above
                total += st.st_size
                candidates.append((0, st.st_mtime, path, st.st_size))
        for path in (self.dir / "cache").iterdir():
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                if path.is_file():
                    total += st.st_size
                    candidates.append((1, st.st_mtime, path, st.st_size))
        for _, _, path, size in sorted(candidates, key=lambda c: (c[0], c[1])):
            if total <= self.cache_bytes:
                break
            if path.name != keep:
                total -= size
                path.unlink(missing_ok=True)

    async def aclose(self) -> None:
        await self.stop()
        for task in list(self._downloads.values()):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if self._owns_http:
            await self._http.aclose()
        with self._lock:
            self._db.close()


def _checked_ref(attachment_id: str, size: int, sha256: str, media_type: str, name: str | None) -> AttachmentRef:
    """The reference as the protocol defines it (PROTOCOL §10.1), or ``ValueError``: a malformed one is not an
    attachment to other devices, and its upload would be refused (``invalid_request``) forever."""
    raw: dict[str, Any] = {"id": attachment_id, "size": size, "sha256": sha256, "media_type": media_type}
    if name is not None:
        raw["name"] = name
    try:
        return msgspec.convert(raw, AttachmentRef)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid attachment reference: {exc}") from exc


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


def _partial_owner(name: str) -> str | None:
    """The attachment id of a partial download's file name (``<id>.<random>.download``)."""
    if not name.endswith(_PARTIAL):
        return None
    owner, _, _ = name[: -len(_PARTIAL)].rpartition(".")
    return owner or None


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _code_of(exc: BaseException) -> str:
    if isinstance(exc, ServerError):
        return exc.code
    return "network" if isinstance(exc, TransportError) else type(exc).__name__
