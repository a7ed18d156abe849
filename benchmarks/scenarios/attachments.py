"""9. Attachments: tus upload and download throughput, and server memory under concurrent uploads.

* **Throughput**: ``photos`` files of ``photo_mib`` MiB (distinct random content, so
  nothing is deduplicated) are uploaded one after another over tus as both SDKs send
  them: in ``chunk_mib`` pieces (default: the whole photo), the first in the creating
  ``POST`` (creation-with-upload), the rest in ``PATCH``es, each with a ``sha1``
  ``Upload-Checksum`` (``data_in_creation=0``: an empty ``POST``, then every piece in a
  ``PATCH``, as tuspy and tus-js-client do by default); then downloaded one after another,
  on one keep-alive connection. The client is lean (``benchmarks.lean_http``: the standard
  library's ``http.client``, bodies hashed as they arrive into a reused buffer) so the ratio
  measures the server rather than a pure-Python HTTP parser. The baseline is a
  raw write of the same bytes to files on the same disk (one file per photo,
  fsynced, as a durable store must) and a raw read of them back, in the same run.
  Reported as MiB/s and as ratios ours ÷ raw (target ≥ 0.5).
* **Memory**: ``clients`` threads upload ``client_mib`` MiB each at once, in ``client_chunk_mib`` PATCHes; the
  server's peak RSS (``VmHWM``) minus its RSS when idle after a warm-up upload
  (target ≤ 100 MiB).

The server runs as for the other scenarios (one uvicorn worker, uvloop), with its
blobs on the filesystem under its data directory.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from benchmarks.lean_http import LeanHttp
from benchmarks.results import Result
from benchmarks.runner import Context
from benchmarks.server import OurServer, our_server

DEFAULTS = {
    "photos": 100,
    "photo_mib": 2,
    "chunk_mib": 2,
    "clients": 20,
    "client_mib": 20,
    "client_chunk_mib": 1,
    "data_in_creation": 1,
    "reps": 1,
}
QUICK = {
    "photos": 20,
    "photo_mib": 2,
    "chunk_mib": 2,
    "clients": 5,
    "client_mib": 8,
    "client_chunk_mib": 1,
    "data_in_creation": 1,
    "reps": 1,
}
MiB = 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}


def _pieces(seed: int, size: int, chunk: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    sent = 0
    while sent < size:
        n = min(chunk, size - sent)
        yield rng.randbytes(n)
        sent += n


def _sha256(seed: int, size: int, chunk: int) -> str:
    sha = hashlib.sha256()
    for piece in _pieces(seed, size, chunk):
        sha.update(piece)
    return sha.hexdigest()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def upload(
    http: LeanHttp, headers: dict[str, str], seed: int, size: int, chunk: int, data_in_creation: bool = True
) -> str:
    """One tus upload of the bytes ``_pieces(seed, size, chunk)``, as the SDKs send it; returns the attachment id.

    The first piece rides on the creation (creation-with-upload), the rest go in PATCHes, each with a
    ``sha1`` ``Upload-Checksum``. The bytes are made once, as the raw write makes them once: the device
    hashes the photo it holds.
    """
    attachment_id = str(uuid.uuid4())
    pieces = list(_pieces(seed, size, chunk))
    sha = hashlib.sha256()
    for piece in pieces:
        sha.update(piece)
    meta = f"id {_b64(attachment_id)},sha256 {_b64(sha.hexdigest())},media_type {_b64('image/jpeg')}"
    create = {**headers, **TUS, "Upload-Length": str(size), "Upload-Metadata": meta}
    first = pieces[0] if pieces and data_in_creation else None
    if first is not None:
        create.update(_body_headers(first))
    answer = http.expect(201, "POST", "/v1/attachments/uploads", create, first)
    offset = int(answer.getheader("upload-offset") or 0)
    for piece in pieces[1 if first is not None else 0 :]:
        patch = {**headers, **TUS, "Upload-Offset": str(offset), **_body_headers(piece)}
        http.expect(204, "PATCH", f"/v1/attachments/uploads/{attachment_id}", patch, piece)
        offset += len(piece)
    return attachment_id


def _body_headers(piece: bytes) -> dict[str, str]:
    digest = base64.b64encode(hashlib.sha1(piece).digest()).decode()
    return {"Content-Type": "application/offset+octet-stream", "Upload-Checksum": f"sha1 {digest}"}


def _throughput(ctx: Context, server: OurServer, result: Result) -> None:
    photos, size, chunk = (
        int(ctx.params["photos"]),
        int(ctx.params["photo_mib"]) * MiB,
        int(ctx.params["chunk_mib"]) * MiB,
    )
    total_mib = photos * size / MiB
    tenant = server.tenant("files")
    headers = server.headers(tenant, "bench")
    task = ctx.progress.add_task(f"attachments: {photos} x {size // MiB} MiB up and down", total=photos * 2)
    with LeanHttp(server.base) as http:
        ids = []
        t0 = time.perf_counter()
        for i in range(photos):
            ids.append(upload(http, headers, i, size, chunk, bool(int(ctx.params["data_in_creation"]))))
            ctx.progress.advance(task)
        t_up = time.perf_counter() - t0
        digests = []
        t0 = time.perf_counter()
        for attachment_id in ids:
            digests.append(download_sha256(http, headers, attachment_id))
            ctx.progress.advance(task)
        t_down = time.perf_counter() - t0
    expected = [_sha256(i, size, chunk) for i in range(photos)]
    result.check(
        "downloaded photos that differ from their upload (SHA-256)",
        0,
        sum(a != b for a, b in zip(expected, digests, strict=True)),
    )

    raw_dir = ctx.backend.tmp / "raw-files"
    raw_dir.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    for i in range(photos):
        _write_durably(raw_dir / f"{i}.jpg", _pieces(i, size, chunk))
    t_raw_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    raw = [hashlib.sha256((raw_dir / f"{i}.jpg").read_bytes()).hexdigest() for i in range(photos)]
    t_raw_read = time.perf_counter() - t0
    result.check("raw files that differ when read back", 0, sum(a != b for a, b in zip(expected, raw, strict=True)))

    result.add("upload", total_mib / t_up, "MiB/s")
    result.add("download", total_mib / t_down, "MiB/s")
    result.add("raw write (fsync per file)", total_mib / t_raw_write, "MiB/s")
    result.add("raw read", total_mib / t_raw_read, "MiB/s")
    result.ratio("upload ÷ raw write", t_raw_write, t_up)
    result.ratio("download ÷ raw read", t_raw_read, t_down)


def download_sha256(http: LeanHttp, headers: dict[str, str], attachment_id: str) -> str:
    """GET one attachment, hashing the body as it arrives (as the raw read hashes what it reads)."""
    return http.get_sha256(f"/v1/attachments/{attachment_id}", headers)


def _write_durably(path: Path, pieces: Iterator[bytes]) -> None:
    with path.open("wb") as f:
        for piece in pieces:
            f.write(piece)
        f.flush()
        os.fsync(f.fileno())


def _memory(ctx: Context, server: OurServer, result: Result) -> None:
    clients, size, chunk = (
        int(ctx.params["clients"]),
        int(ctx.params["client_mib"]) * MiB,
        int(ctx.params["client_chunk_mib"]) * MiB,
    )
    tenant = server.tenant("mem")
    headers = server.headers(tenant, "bench")
    with LeanHttp(server.base) as http:
        upload(http, headers, 10_000, 4 * MiB, chunk)  # warm-up: every code path loaded once
    time.sleep(0.5)
    idle = server.rss_bytes()
    failures: list[BaseException] = []
    task = ctx.progress.add_task(f"attachments: {clients} clients x {size // MiB} MiB at once", total=clients)

    def one(i: int) -> None:
        try:
            with LeanHttp(server.base, timeout=300) as http:
                upload(http, headers, 20_000 + i, size, chunk)
        except BaseException as exc:  # reported below
            failures.append(exc)
        ctx.progress.advance(task)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    result.check("concurrent uploads that failed", [], [repr(f) for f in failures])
    peak = server.peak_rss_bytes()
    result.add("server RSS idle", idle / MiB, "MiB")
    result.add("server peak RSS above idle, concurrent uploads", (peak - idle) / MiB, "MiB")
    result.add("concurrent upload throughput", clients * size / MiB / elapsed, "MiB/s")


def run(ctx: Context, result: Result) -> None:
    if ctx.backend.name != "sqlite":
        result.notes.append("blobs on the filesystem; metadata on " + ctx.backend.name)
    for rep in range(ctx.reps):
        with our_server(ctx.backend, log_name=f"server-attachments-{rep}.log") as server:
            _throughput(ctx, server, result)
        with our_server(ctx.backend, log_name=f"server-attachments-mem-{rep}.log") as server:
            _memory(ctx, server, result)
