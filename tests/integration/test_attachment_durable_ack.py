"""A tus ``204`` means the bytes are on disk: the PATCH's objects are fsynced before the answer leaves.

As ``test_durable_ack.py`` does for pushes: a real server, Debian's ``strace`` attached to all its
threads for one PATCH, and the system calls read in order. Between reading the PATCH and writing
``HTTP/1.1 204`` there must be a completed fsync of every object the PATCH stored and of each
directory above it up to the blob root, once each, and the fsync of the SQLite WAL that commits
the new offset. The filesystem blob store writes through obstore, which never fsyncs on its own:
without ``BlobStore.sync`` none of the object fsyncs happen.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from syncserver.auth.tokens import TokenVerifier
from syncserver.testing import ROOT, cli, free_port, server_env, stop, wait_ready
from tests import services
from tests.integration.test_durable_ack import SYSCALLS, require_strace

pytestmark = pytest.mark.slow

_LINE = re.compile(r"^(?P<pid>\d+)\s+(?P<rest>.*)$")
_SYNC = re.compile(r"^(?:<\.\.\. )?f(?:data)?sync(?:\((?P<fd>\d+)<(?P<path>[^>]*)>)?")
SIZE = 300_000


def synced_between_patch_and_204(trace: str) -> list[str]:
    """Paths whose fsync/fdatasync returned 0 after the PATCH was read and before the 204 was written."""
    request = response = -1
    pending: dict[str, str] = {}  # pid -> path of its unfinished fsync
    synced: list[tuple[int, str]] = []
    for i, line in enumerate(trace.splitlines()):
        m = _LINE.match(line)
        if m is None:
            continue
        pid, rest = m["pid"], m["rest"]
        if request < 0 and rest.startswith(("read(", "recvfrom(")) and '"PATCH /v1/attachments' in rest:
            request = i
        elif request >= 0 and response < 0 and rest.startswith(("write", "send")) and '"HTTP/1.1 204' in rest:
            response = i
        sync = _SYNC.match(rest)
        if sync is None:
            continue
        if rest.endswith("<unfinished ...>"):
            pending[pid] = sync["path"] or ""
        elif rest.startswith("<..."):
            path = pending.pop(pid, "")
            if rest.rstrip().endswith("= 0"):
                synced.append((i, path))
        elif rest.rstrip().endswith("= 0"):
            synced.append((i, sync["path"] or ""))
    assert request >= 0, "the PATCH was not seen being read"
    assert response >= 0, "the 204 was not seen being written"
    return [path for at, path in synced if request < at < response]


def patch_under_strace(tmp: Path, env: dict[str, str]) -> tuple[str, str]:
    """Start a server, create an upload, attach strace, send its one PATCH, detach; (trace, attachment id)."""
    port, log, out = free_port(), tmp / "server.log", tmp / "strace.txt"
    argv = [sys.executable, "-m", "uvicorn", "syncserver.asgi:app", "--port", str(port), "--loop", "uvloop"]
    data = os.urandom(SIZE)
    attachment_id = str(uuid.uuid4())
    token = TokenVerifier(env["SYNC_JWT_SECRET"], "syncserver", "sync").issue("acme", "d1", "dispatcher")
    headers = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
    with log.open("wb") as server_log:
        server = subprocess.Popen(argv, env=env, stdout=server_log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base, server, log)
            with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
                pairs = {"id": attachment_id, "sha256": hashlib.sha256(data).hexdigest(), "media_type": "image/jpeg"}
                metadata = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())
                created = http.post(
                    "/v1/attachments/uploads", headers={"Upload-Length": str(SIZE), "Upload-Metadata": metadata}
                )
                assert created.status_code == 201, created.text
                strace = [require_strace(), "-f", "-y", "-s", "24", "-e", f"trace={SYSCALLS}", "-o", str(out)]
                tracer = subprocess.Popen(  # strace on our own child
                    [*strace, "-p", str(server.pid)],
                    stderr=subprocess.PIPE,
                    text=True,
                )
                try:
                    assert tracer.stderr is not None
                    attached = tracer.stderr.readline()  # strace announces the attach before tracing
                    if "attached" not in attached:
                        tracer.wait(timeout=10)
                        message = f"strace could not attach: {attached}{tracer.stderr.read()}"
                        if services.IN_CI:
                            pytest.fail(message)
                        pytest.skip(message)
                    r = http.patch(
                        f"/v1/attachments/uploads/{attachment_id}",
                        headers={"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
                        content=data,
                    )
                    assert r.status_code == 204, r.text
                finally:
                    tracer.send_signal(signal.SIGINT)  # detach and flush
                    tracer.wait(timeout=30)
                    assert tracer.stderr is not None
                    tracer.stderr.close()
        finally:
            stop(server)
    return out.read_text(), attachment_id


def test_a_patch_is_answered_only_after_its_objects_and_directories_are_fsynced(tmp_path: Path) -> None:
    require_strace()
    env = server_env(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}", SYNC_LOG_LEVEL="WARNING")
    cli(env, "tenant", "create", "acme")
    trace, attachment_id = patch_under_strace(tmp_path, env)
    blobs = (tmp_path / "data" / "blobs").resolve()
    synced = synced_between_patch_and_204(trace)

    under_blobs = Counter(os.path.relpath(p, blobs) for p in synced if Path(p).is_relative_to(blobs))
    owner = f"acme/{attachment_id}"
    [chunk] = [p for p in under_blobs if p.startswith(f"{owner}/v1/00000000-")]  # named with the PATCH's token
    expected = [chunk, f"{owner}/v1", owner, "acme", "."]
    assert sorted(under_blobs) == sorted(expected), synced
    assert set(under_blobs.values()) == {1}, under_blobs  # once each: one sync per PATCH, not per put
    assert any(p.endswith("sync.db-wal") for p in synced), synced  # and the offset's commit
