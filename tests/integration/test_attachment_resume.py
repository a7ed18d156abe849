"""Resumable uploads against a real server process, with tuspy (the tus project's Python client) unchanged.

* A 20 MiB file in 1 MiB chunks; the connection is cut halfway by a proxy; the
  upload resumes from the offset HEAD reports; the downloaded bytes are equal.
* The server is killed (SIGKILL) in the middle of a PATCH; after a restart the
  upload resumes; the bytes are identical; nothing partial is ever downloadable.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError, TusUploadFailed

from syncserver.auth.tokens import TokenVerifier
from syncserver.testing import ROOT, cli, free_port, server_env, stop, wait_ready

MiB = 1024 * 1024
pytestmark = pytest.mark.slow


@contextmanager
def server_process(env: dict[str, str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "syncserver.asgi:app", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}", proc, log)
            yield proc
        finally:
            stop(proc)


class CuttingProxy:
    """Forwards TCP to the server and drops every connection once ``cut_after`` request bytes went through."""

    def __init__(self, target_port: int, cut_after: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.cut_after = cut_after
        self.forwarded = 0
        self.cut = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(downstream, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, downstream, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, counts: bool) -> None:
        try:
            while data := src.recv(65536):
                if counts:
                    self.forwarded += len(data)
                    if self.forwarded > self.cut_after:
                        self.cut.set()
                        break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = server_env(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}", SYNC_ATTACHMENT_MAX_BYTES=str(64 * MiB))
    cli(e, "tenant", "create", "acme")
    return e


def token(env: dict[str, str]) -> dict[str, str]:
    verifier = TokenVerifier(env["SYNC_JWT_SECRET"], "syncserver", "sync")
    return {"Authorization": f"Bearer {verifier.issue('acme', 'driver-1', 'dispatcher')}"}


def uploader(base: str, headers: dict[str, str], data: bytes, attachment_id: str, url: str | None = None) -> object:
    c = tus_client.TusClient(base + "/v1/attachments/uploads", headers=headers)
    metadata = {"id": attachment_id, "sha256": hashlib.sha256(data).hexdigest(), "filetype": "image/jpeg"}
    return c.uploader(file_stream=io.BytesIO(data), chunk_size=MiB, metadata=metadata, upload_checksum=True, url=url)


def test_tuspy_upload_cut_halfway_resumes_from_head(env: dict[str, str], tmp_path: Path) -> None:
    data = os.urandom(20 * MiB)
    attachment_id = str(uuid.uuid4())
    port = free_port()
    headers = token(env)
    with server_process(env, port, tmp_path / "server.log"):
        base = f"http://127.0.0.1:{port}"
        proxy = CuttingProxy(port, cut_after=10 * MiB + MiB // 2)
        try:
            first = uploader(f"http://127.0.0.1:{proxy.port}", headers, data, attachment_id)
            with pytest.raises((TusUploadFailed, TusCommunicationError)):
                first.upload()  # type: ignore[attr-defined]
            assert proxy.cut.is_set()
        finally:
            proxy.close()
        url = f"{base}/v1/attachments/uploads/{attachment_id}"
        head = httpx.head(url, headers={**headers, "Tus-Resumable": "1.0.0"})
        offset = int(head.headers["upload-offset"])
        assert 9 * MiB <= offset <= 11 * MiB
        assert offset % MiB == 0  # the chunk in flight carried a checksum: none of it was kept
        assert httpx.get(f"{base}/v1/attachments/{attachment_id}", headers=headers).status_code == 404

        second = uploader(base, headers, data, attachment_id, url=url)
        assert second.offset == offset  # type: ignore[attr-defined]  # tuspy asked HEAD
        second.upload()  # type: ignore[attr-defined]
        got = httpx.get(f"{base}/v1/attachments/{attachment_id}", headers=headers, timeout=60)
        assert got.status_code == 200
        assert hashlib.sha256(got.content).hexdigest() == hashlib.sha256(data).hexdigest()


def test_kill_9_mid_upload_then_restart_and_resume(env: dict[str, str], tmp_path: Path) -> None:
    data = os.urandom(12 * MiB)
    attachment_id = str(uuid.uuid4())
    headers = token(env)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/v1/attachments/uploads/{attachment_id}"
    log = tmp_path / "server.log"
    with server_process(env, port, log) as proc:
        up = uploader(base, headers, data, attachment_id)
        up.upload(stop_at=5 * MiB)  # type: ignore[attr-defined]
        # A PATCH whose body stops arriving halfway; the server dies while it waits for the rest.
        sock = socket.create_connection(("127.0.0.1", port))
        request = (
            f"PATCH /v1/attachments/uploads/{attachment_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: {headers['Authorization']}\r\nTus-Resumable: 1.0.0\r\n"
            f"Upload-Offset: {5 * MiB}\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {2 * MiB}\r\n\r\n"
        ).encode()
        sock.sendall(request + data[5 * MiB : 6 * MiB])
        assert httpx.get(f"{base}/v1/attachments/{attachment_id}", headers=headers).status_code == 404
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        sock.close()

    with server_process(env, port, log):
        head = httpx.head(url, headers={**headers, "Tus-Resumable": "1.0.0"})
        offset = int(head.headers["upload-offset"])
        assert 5 * MiB <= offset <= 6 * MiB
        assert httpx.get(f"{base}/v1/attachments/{attachment_id}", headers=headers).status_code == 404
        resumed = uploader(base, headers, data, attachment_id, url=url)
        assert resumed.offset == offset  # type: ignore[attr-defined]
        resumed.upload()  # type: ignore[attr-defined]
        got = httpx.get(f"{base}/v1/attachments/{attachment_id}", headers=headers, timeout=60)
        assert got.status_code == 200
        assert got.content == data


def test_a_patch_without_checksum_cut_short_keeps_what_arrived(env: dict[str, str], tmp_path: Path) -> None:
    data = os.urandom(3 * MiB)
    attachment_id = str(uuid.uuid4())
    headers = token(env)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/v1/attachments/uploads/{attachment_id}"
    with server_process(env, port, tmp_path / "server.log"):
        meta = f"id {_b64(attachment_id)},sha256 {_b64(hashlib.sha256(data).hexdigest())},filetype {_b64('image/png')}"
        created = httpx.post(
            f"{base}/v1/attachments/uploads",
            headers={**headers, "Tus-Resumable": "1.0.0", "Upload-Length": str(len(data)), "Upload-Metadata": meta},
        )
        assert created.status_code == 201
        sock = socket.create_connection(("127.0.0.1", port))
        request = (
            f"PATCH /v1/attachments/uploads/{attachment_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: {headers['Authorization']}\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
            f"Content-Type: application/offset+octet-stream\r\nContent-Length: {len(data)}\r\n\r\n"
        ).encode()
        sock.sendall(request + data[: MiB + 12345])
        sock.close()  # the connection drops with the body half sent
        offset = 0
        for _ in range(100):  # the server notices the disconnect asynchronously
            offset = int(httpx.head(url, headers={**headers, "Tus-Resumable": "1.0.0"}).headers["upload-offset"])
            if offset:
                break
            time.sleep(0.05)
        assert 0 < offset <= MiB + 12345  # tus: without a checksum, what arrived is kept
        resumed = uploader(base, headers, data, attachment_id, url=url)
        assert resumed.offset == offset  # type: ignore[attr-defined]
        resumed.upload()  # type: ignore[attr-defined]
        got = httpx.get(f"{base}/v1/attachments/{attachment_id}", headers=headers, timeout=60)
        assert got.content == data


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
