"""The attachment queue never blocks, never dies and never uploads what was not attached; fetches share downloads
and stay within the cache bound."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from syncclient import Attachments, MemoryServer, MockTransport, ServerError, SyncClient, TransportError
from syncclient.backoff import Backoff
from syncproto.attachments import AttachmentRef
from tests.sdk.conftest import InProcServer

Answer = Callable[[httpx.Request], httpx.Response | None]


class Intercept(httpx.AsyncBaseTransport):
    """Passes requests to the in-process server unless ``answer`` returns a response of its own."""

    def __init__(self, inner: httpx.AsyncBaseTransport, answer: Answer) -> None:
        self.inner = inner
        self.answer = answer
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        own = self.answer(request)
        if own is not None:
            return own
        return await self.inner.handle_async_request(request)


def upload_id(request: httpx.Request) -> str:
    """The attachment id a tus request is about."""
    if request.method == "POST":
        for item in request.headers.get("upload-metadata", "").split(","):
            key, _, value = item.partition(" ")
            if key == "id":
                return base64.b64decode(value).decode()
        return ""
    return request.url.path.rsplit("/", 1)[-1]


def error(status: int, code: str) -> httpx.Response:
    return httpx.Response(status, content=json.dumps({"error": {"code": code, "message": "no"}}).encode())


def files_with(
    server: InProcServer, client: SyncClient, answer: Answer, **kwargs: object
) -> tuple[Attachments, Intercept]:
    transport = Intercept(server.http._transport, answer)
    http = httpx.AsyncClient(transport=transport, base_url=str(server.http.base_url))
    files = Attachments(client, server.tmp / "f", http=http, token=client.token, **kwargs)  # type: ignore[arg-type]
    return files, transport


async def close(files: Attachments, client: SyncClient) -> None:
    await files.aclose()
    await files._http.aclose()
    await client.aclose()


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


# --- B: a malformed reference, a permanent 4xx, a transient error --------------------------------------


async def test_attach_refuses_a_reference_the_server_would_refuse_and_keeps_nothing(server: InProcServer) -> None:
    client = server.client("phone-1")
    files, _ = files_with(server, client, lambda r: None)
    with pytest.raises(ValueError, match="media_type"):
        files.attach("deliveries", "dlv-1", "pod_photo", os.urandom(100), "image/jpeg; quality=90")
    with pytest.raises(ValueError, match="name"):
        files.attach("deliveries", "dlv-1", "pod_photo", b"x", "image/jpeg", name="n" * 256)
    assert files.pending() == []
    assert client.pending_count() == 0
    assert list((files.dir / "files").iterdir()) == []
    assert list((files.dir / "tmp").iterdir()) == []
    await close(files, client)


async def test_a_permanent_4xx_fails_that_upload_and_the_queue_goes_on(server: InProcServer) -> None:
    client = server.client("phone-1")
    doomed: set[str] = set()
    files, transport = files_with(
        server, client, lambda r: error(400, "invalid_request") if upload_id(r) in doomed else None
    )
    bad = files.attach("deliveries", "dlv-1", "pod_photo", os.urandom(100), "image/jpeg")
    doomed.add(bad.id)
    good = files.attach("deliveries", "dlv-2", "pod_photo", os.urandom(5000), "image/jpeg")
    states = await files.upload_pending()  # no error: nothing here is worth retrying
    assert [(s.id, s.state, s.code) for s in states] == [
        (bad.id, "failed", "invalid_request"),
        (good.id, "uploaded", None),
    ]
    status = files.status(bad.id)
    assert status is not None
    assert (status.state, status.code) == ("failed", "invalid_request")
    assert files.pending() == []
    sent = len(transport.requests)
    assert await files.upload_pending() == []  # terminal: never sent again
    assert len(transport.requests) == sent
    await close(files, client)


async def test_a_failed_upload_is_sent_again_on_retry_or_forgotten_on_discard(server: InProcServer) -> None:
    """Once what made it fail is fixed, ``retry`` queues it again (it uploads); ``discard`` drops the row and the
    local copy. Neither applies to a file still queued: its reference has synced, its bytes must follow."""
    client = server.client("phone-1")
    doomed: set[str] = set()
    files, _ = files_with(server, client, lambda r: error(400, "invalid_request") if upload_id(r) in doomed else None)
    data = os.urandom(3000)
    first = files.attach("deliveries", "dlv-1", "pod_photo", data, "image/jpeg")
    second = files.attach("deliveries", "dlv-2", "pod_photo", os.urandom(100), "image/jpeg")
    doomed |= {first.id, second.id}
    with pytest.raises(ValueError, match="not refused or failed"):
        files.retry(first.id)  # still pending
    with pytest.raises(ValueError, match="not refused or failed"):
        files.discard(first.id)
    assert [s.state for s in await files.upload_pending()] == ["failed", "failed"]

    doomed.clear()  # fixed (a token with the right scope, say)
    assert files.retry(first.id).state == "pending"
    assert files.pending() == [first.id]
    assert [(s.id, s.state) for s in await files.upload_pending()] == [(first.id, "uploaded")]
    assert (await files.fetch(first)).read_bytes() == data

    files.discard(second.id)
    assert files.status(second.id) is None
    assert not (files.dir / "files" / second.id).exists()
    with pytest.raises(ValueError, match="not refused or failed"):
        files.retry(second.id)
    await close(files, client)


async def test_a_transient_error_on_one_upload_does_not_hold_back_the_next(server: InProcServer) -> None:
    client = server.client("phone-1")
    sick: set[str] = set()
    files, _ = files_with(
        server,
        client,
        lambda r: error(503, "unavailable") if upload_id(r) in sick else None,
        backoff=Backoff(base=0.05, cap=0.1),
    )
    first = files.attach("deliveries", "dlv-1", "pod_photo", os.urandom(100), "image/jpeg")
    sick.add(first.id)
    second = files.attach("deliveries", "dlv-2", "pod_photo", os.urandom(5000), "image/jpeg")
    with pytest.raises(ServerError) as raised:
        await files.upload_pending()
    assert raised.value.status == 503
    assert [(i, files.status(i).state) for i in (first.id, second.id)] == [  # type: ignore[union-attr]
        (first.id, "pending"),
        (second.id, "uploaded"),
    ]

    # In the background the sick one is retried with backoff, and goes once the server recovers.
    files.start()
    third = files.attach("deliveries", "dlv-3", "pod_photo", os.urandom(500), "image/jpeg")
    await until(lambda: files.status(third.id).state == "uploaded")  # type: ignore[union-attr]
    assert files.status(first.id).state == "pending"  # type: ignore[union-attr]
    sick.clear()
    await until(lambda: files.status(first.id).state == "uploaded")  # type: ignore[union-attr]
    await close(files, client)


async def test_the_background_uploader_is_not_blocked_by_a_malformed_upload(server: InProcServer) -> None:
    client = server.client("phone-1")
    doomed: set[str] = set()
    files, _ = files_with(
        server,
        client,
        lambda r: error(422, "invalid_request") if upload_id(r) in doomed else None,
        backoff=Backoff(base=0.01, cap=0.02),
    )
    bad = files.attach("deliveries", "dlv-1", "pod_photo", os.urandom(100), "image/jpeg")
    doomed.add(bad.id)
    good = files.attach("deliveries", "dlv-2", "pod_photo", os.urandom(5000), "image/jpeg")
    files.start()
    await until(lambda: files.status(good.id).state == "uploaded")  # type: ignore[union-attr]
    assert files.status(bad.id).state == "failed"  # type: ignore[union-attr]
    await close(files, client)


# --- C: the background task survives anything ------------------------------------------------------------


async def test_a_failing_progress_callback_neither_stops_nor_kills_the_uploader(
    server: InProcServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = server.client("phone-1")

    def progress(attachment_id: str, sent: int, total: int) -> None:
        raise RuntimeError("UI view already closed")

    files, _ = files_with(server, client, lambda r: None, on_progress=progress)
    files.start()
    first = files.attach("deliveries", "dlv-1", "pod_photo", os.urandom(1000), "image/jpeg")
    await until(lambda: files.status(first.id).state == "uploaded")  # type: ignore[union-attr]
    second = files.attach("deliveries", "dlv-2", "pod_photo", os.urandom(1000), "image/jpeg")
    await until(lambda: files.status(second.id).state == "uploaded")  # type: ignore[union-attr]
    assert files._task is not None
    assert not files._task.done()
    assert any("on_progress" in r.getMessage() and r.exc_info for r in caplog.records)
    await close(files, client)


async def test_an_unexpected_error_is_logged_and_retried_not_fatal(
    server: InProcServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = server.client("phone-1")
    files, _ = files_with(server, client, lambda r: None, backoff=Backoff(base=0.01, cap=0.02))
    real_pending = files.pending
    broken = [2]

    def pending() -> list[str]:
        if broken[0]:
            broken[0] -= 1
            raise OSError("disk hiccup")
        return real_pending()

    monkeypatch.setattr(files, "pending", pending)
    caplog.set_level(logging.ERROR, "syncclient")
    ref = files.attach("deliveries", "dlv-1", "pod_photo", os.urandom(1000), "image/jpeg")
    files.start()
    await until(lambda: files.status(ref.id).state == "uploaded")  # type: ignore[union-attr]
    assert files._task is not None
    assert not files._task.done()
    assert any(r.exc_info and "disk hiccup" in str(r.exc_info[1]) for r in caplog.records)
    await close(files, client)


# --- D: concurrent fetches ----------------------------------------------------------------------------------


class Slow(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.data), 64 * 1024):
            await asyncio.sleep(0.001)
            yield self.data[i : i + 64 * 1024]


def blob_server(blobs: dict[str, bytes], cut: set[str] | None = None) -> tuple[httpx.AsyncClient, list[httpx.Request]]:
    """Serves ``GET /v1/attachments/{id}`` (with ``Range``); a download of an id in ``cut`` breaks halfway."""
    seen: list[httpx.Request] = []

    class CutStream(httpx.AsyncByteStream):
        def __init__(self, data: bytes) -> None:
            self.data = data

        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield self.data[: len(self.data) // 2]
            raise httpx.ReadError("connection reset by peer")

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        attachment_id = request.url.path.rsplit("/", 1)[-1]
        data = blobs[attachment_id]
        start = 0
        if "range" in request.headers:
            start = int(request.headers["range"].removeprefix("bytes=").rstrip("-"))
        body = data[start:]
        stream = CutStream(body) if cut is not None and attachment_id in cut else Slow(body)
        return httpx.Response(206 if start else 200, stream=stream)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler)), seen


def ref_of(attachment_id: str, data: bytes) -> AttachmentRef:
    return AttachmentRef(attachment_id, len(data), hashlib.sha256(data).hexdigest(), "image/jpeg")


def offline_client(tmp: Path) -> SyncClient:
    return SyncClient(None, None, "r1", tmp / "c.db", transport=MockTransport(MemoryServer()))


async def test_concurrent_fetches_of_one_attachment_share_one_download(tmp_path: Path) -> None:
    data = os.urandom(2 << 20)
    http, seen = blob_server({"a1": data})
    client = offline_client(tmp_path)
    files = Attachments(client, tmp_path / "att", url="http://x", token="t", http=http)
    ref = ref_of("a1", data)
    paths = await asyncio.gather(*(files.fetch(ref) for _ in range(3)))
    assert len(seen) == 1
    assert {p for p in paths} == {files.dir / "cache" / "a1"}
    assert paths[0].read_bytes() == data
    assert list((files.dir / "tmp").iterdir()) == []
    # One caller giving up does not break the others' download.
    (files.dir / "cache" / "a1").unlink()
    waiting = [asyncio.ensure_future(files.fetch(ref)) for _ in range(2)]
    await asyncio.sleep(0.005)
    waiting[0].cancel()
    assert (await waiting[1]).read_bytes() == data
    await files.aclose()
    await http.aclose()
    await client.aclose()


# --- F: partial downloads within the bound ------------------------------------------------------------------


async def test_partial_downloads_count_against_the_cache_bound_and_are_dropped_at_startup(tmp_path: Path) -> None:
    blobs = {f"a{i}": os.urandom(400_000) for i in range(10)}
    http, _ = blob_server(blobs, cut=set(blobs))
    client = offline_client(tmp_path)
    files = Attachments(client, tmp_path / "att", url="http://x", token="t", http=http, cache_bytes=1_000_000)

    def stored() -> int:
        return sum(p.stat().st_size for sub in ("tmp", "cache") for p in (files.dir / sub).iterdir())

    for attachment_id, data in blobs.items():
        with pytest.raises(TransportError):
            await files.fetch(ref_of(attachment_id, data))
        assert stored() <= files.cache_bytes
    # Within the bound, an interrupted download still resumes where it stopped.
    last = "a9"
    assert any(p.name.startswith(f"{last}.") for p in (files.dir / "tmp").iterdir())
    http_ok, seen_ok = blob_server(blobs)
    files._http = http_ok
    assert (await files.fetch(ref_of(last, blobs[last]))).read_bytes() == blobs[last]
    assert seen_ok[0].headers["range"] == f"bytes={len(blobs[last]) // 2}-"
    assert stored() <= files.cache_bytes
    await files.aclose()

    # A restart leaves no partial download behind.
    (tmp_path / "att" / "tmp" / "a1.0123.download").write_bytes(b"x" * 1000)
    again = Attachments(client, tmp_path / "att", url="http://x", token="t", http=http_ok, cache_bytes=1_000_000)
    assert list((again.dir / "tmp").iterdir()) == []
    await again.aclose()
    for h in (http, http_ok):
        await h.aclose()
    await client.aclose()


async def test_a_download_in_flight_makes_room_in_the_cache_first(tmp_path: Path) -> None:
    blobs = {f"a{i}": os.urandom(300_000) for i in range(4)}
    http, _ = blob_server(blobs)
    client = offline_client(tmp_path)
    files = Attachments(client, tmp_path / "att", url="http://x", token="t", http=http, cache_bytes=1_000_000)
    for attachment_id in ("a0", "a1", "a2"):
        await files.fetch(ref_of(attachment_id, blobs[attachment_id]))
    peak = 0

    def watch() -> None:
        nonlocal peak
        total = sum(p.stat().st_size for sub in ("tmp", "cache") for p in (files.dir / sub).iterdir())
        peak = max(peak, total)

    task = asyncio.ensure_future(files.fetch(ref_of("a3", blobs["a3"])))
    while not task.done():
        watch()
        await asyncio.sleep(0)
    await task
    watch()
    assert peak <= files.cache_bytes
    assert not (files.dir / "cache" / "a0").exists()  # the least recently used made room
    await files.aclose()
    await http.aclose()
    await client.aclose()


# --- G: attach from a worker thread --------------------------------------------------------------------------


async def test_attach_from_a_worker_thread_wakes_the_uploader_at_once(server: InProcServer) -> None:
    client = server.client("phone-1")
    files, _ = files_with(server, client, lambda r: None)
    files.start()
    await asyncio.sleep(0.1)  # the uploader is idle, waiting to be woken
    refs: list[AttachmentRef] = []
    thread = threading.Thread(
        target=lambda: refs.append(files.attach("deliveries", "dlv-1", "pod_photo", os.urandom(2000), "image/jpeg"))
    )
    thread.start()
    # One timer, so nothing else wakes this loop meanwhile: only the uploader's own wake-up can make it go.
    await asyncio.sleep(1.5)
    assert refs
    status = files.status(refs[0].id)
    assert status is not None
    assert status.state == "uploaded"
    thread.join()
    await close(files, client)


# --- H: a failed attach leaves nothing -----------------------------------------------------------------------


async def test_a_failed_attach_queues_no_upload_and_keeps_no_copy(server: InProcServer) -> None:
    client = server.client("phone-1")
    files, transport = files_with(server, client, lambda r: None)
    files.start()
    with pytest.raises(ValueError, match="dlv 1"):
        files.attach("deliveries", "dlv 1 with spaces", "pod_photo", os.urandom(2000), "image/jpeg")
    with pytest.raises(ValueError, match="invalid change"):
        files.attach("deliveries", "dlv-1", "bad field!", os.urandom(2000), "image/jpeg")
    assert client.pending_count() == 0
    assert files.pending() == []
    assert list((files.dir / "files").iterdir()) == []
    assert await files.upload_pending() == []
    files.wake()
    await asyncio.sleep(0.2)
    assert [r for r in transport.requests if "/uploads" in r.url.path] == []
    await close(files, client)
