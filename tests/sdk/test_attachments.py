"""The SDK's attachments against the real app in process: attach offline, upload with resume, fetch into a cache."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import httpx
import pytest

from syncclient import Attachments, SyncClient, TransportError
from syncproto.attachments import attachment_ref
from tests.sdk.conftest import InProcServer


def files_of(server: InProcServer, client: SyncClient, name: str, **kwargs: object) -> Attachments:
    return Attachments(client, server.tmp / name, http=server.http, token=client.token, **kwargs)  # type: ignore[arg-type]


async def test_attach_copies_the_file_and_writes_the_reference_before_returning(
    server: InProcServer, tmp_path: Path
) -> None:
    client = server.client("phone-1")
    files = files_of(server, client, "phone-1-files")
    photo = tmp_path / "IMG_0042.jpg"
    data = os.urandom(300_000)
    photo.write_bytes(data)
    ref = files.attach("deliveries", "dlv-1", "pod_photo", photo, "image/jpeg")
    photo.unlink()  # the camera app deletes its temporary file at once

    assert (ref.size, ref.sha256, ref.name) == (len(data), hashlib.sha256(data).hexdigest(), "IMG_0042.jpg")
    assert (files.dir / "files" / ref.id).read_bytes() == data
    assert files.pending() == [ref.id]
    view = client.collection("deliveries").get("dlv-1")
    assert view is not None
    assert attachment_ref(view["pod_photo"]) == ref
    assert client.pending_count() == 1

    # The metadata does not wait for the bytes: the change syncs first, the attachment shows pending.
    await client.sync()
    server_view = await server.transport().entity("deliveries", "dlv-1")
    assert server_view is not None
    assert server_view.attachments == {ref.id: "pending"}

    seen: list[tuple[str, int, int]] = []
    files.on_progress = lambda i, sent, total: seen.append((i, sent, total))
    states = await files.upload_pending()
    assert [(s.id, s.state) for s in states] == [(ref.id, "uploaded")]
    assert seen[-1] == (ref.id, len(data), len(data))
    assert [sent for _, sent, _ in seen] == sorted(sent for _, sent, _ in seen)
    server_view = await server.transport().entity("deliveries", "dlv-1")
    assert server_view is not None
    assert server_view.attachments == {ref.id: "available"}
    await files.aclose()
    await client.aclose()


async def test_fetch_downloads_into_a_bounded_cache_and_verifies_the_bytes(server: InProcServer) -> None:
    writer, reader = server.client("phone-1"), server.client("web-1")
    up = files_of(server, writer, "w")
    down = files_of(server, reader, "r", cache_bytes=250_000)
    payloads = [os.urandom(100_000) for _ in range(3)]
    refs = [up.attach("deliveries", f"dlv-{i}", "pod_photo", p, "image/png") for i, p in enumerate(payloads)]
    await up.upload_pending()
    for ref, data in zip(refs, payloads, strict=True):
        path = await down.fetch(ref)
        assert path.read_bytes() == data
    cached = sorted(p.name for p in (down.dir / "cache").iterdir())
    assert len(cached) == 2  # 300 kB do not fit in 250 kB: the least recently used went
    assert refs[2].id in cached
    assert (await down.fetch(refs[0])).read_bytes() == payloads[0]  # fetched again on demand
    for f in (up, down):
        await f.aclose()
    for c in (writer, reader):
        await c.aclose()


async def test_a_refused_upload_is_marked_and_the_next_one_still_goes_through(server: InProcServer) -> None:
    client = server.client("phone-1")
    files = files_of(server, client, "f")
    bad = files.attach("deliveries", "dlv-1", "note_file", b"plain text", "text/plain")
    good = files.attach("deliveries", "dlv-1", "pod_photo", os.urandom(5000), "image/jpeg")
    states = await files.upload_pending()
    assert [(s.id, s.state, s.code) for s in states] == [
        (bad.id, "refused", "media_type_not_allowed"),
        (good.id, "uploaded", None),
    ]
    assert files.pending() == []
    status = files.status(bad.id)
    assert status is not None
    assert status.code == "media_type_not_allowed"
    await files.aclose()
    await client.aclose()


class FlakyTransport(httpx.AsyncBaseTransport):
    """Fails the n-th PATCH with a network error, and counts the upload bytes sent (creation and PATCHes)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, fail_patch: int) -> None:
        self.inner = inner
        self.fail_patch = fail_patch
        self.patches = 0
        self.patched_bytes = 0
        self.created_with: list[int] = []
        """The body size of each creation request."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH":
            self.patches += 1
            if self.patches == self.fail_patch:
                raise httpx.ReadError("connection reset")
            self.patched_bytes += len(request.content)
        if request.method == "POST" and request.url.path.endswith("/uploads"):
            self.created_with.append(len(request.content))
        return await self.inner.handle_async_request(request)


async def test_an_interrupted_upload_resumes_where_the_server_stopped(server: InProcServer) -> None:
    client = server.client("phone-1")
    flaky = FlakyTransport(server.http._transport, fail_patch=3)
    http = httpx.AsyncClient(transport=flaky, base_url=str(server.http.base_url))
    files = Attachments(client, server.tmp / "f", http=http, token=client.token, chunk_size=64 * 1024)
    data = os.urandom(300_000)
    ref = files.attach("deliveries", "dlv-1", "pod_photo", data, "image/jpeg")
    with pytest.raises(TransportError):
        await files.upload_pending()
    assert files.pending() == [ref.id]
    states = await files.upload_pending()
    assert states[0].state == "uploaded"
    # The first chunk went with the creation; the resumed creation carried nothing.
    assert flaky.created_with == [64 * 1024, 0]
    # Nothing sent twice: the second run resumed at the server's offset.
    assert flaky.created_with[0] + flaky.patched_bytes == len(data)
    reader = server.client("web-1")
    down = files_of(server, reader, "r")
    assert (await down.fetch(ref)).read_bytes() == data
    for f in (files, down):
        await f.aclose()
    await http.aclose()
    for c in (client, reader):
        await c.aclose()


async def test_background_uploads_start_when_a_file_is_attached(server: InProcServer) -> None:
    client = server.client("phone-1")
    done: list[str] = []
    finished = asyncio.Event()

    def progress(attachment_id: str, sent: int, total: int) -> None:
        if sent == total:
            done.append(attachment_id)
            finished.set()

    files = files_of(server, client, "f", on_progress=progress)
    files.start()
    ref = files.attach("deliveries", "dlv-1", "signature", os.urandom(2000), "image/png")
    await asyncio.wait_for(finished.wait(), timeout=10)
    assert done == [ref.id]
    status = files.status(ref.id)
    assert status is not None
    assert status.state == "uploaded"
    await files.aclose()
    await client.aclose()
