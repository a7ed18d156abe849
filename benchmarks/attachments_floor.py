"""What a 2 MiB download costs before our server does anything: the floor under the attachments ratio.

    python -m benchmarks.attachments_floor [--photos 200]

Each figure is milliseconds per 2 MiB photo, and the ratio the attachments
scenario would report if the server cost nothing beyond it (raw read ÷ it):

* ``raw read``: the scenario's baseline, a file read from the page cache and hashed (SHA-256);
* ``AES-256-GCM open``: decrypting the photo's two 1 MiB chunks into one buffer;
* ``obstore local read``: reading the two sealed chunks from a ``LocalStore`` as a download does
  (``get_range_async`` of each, concurrently, on uvloop); ``os.pread`` reads the same two files on the
  event loop, for comparison (the blob store goes through obstore, MISSION.md: this is what that costs);
* ``loopback TCP``: a Python thread sends the bytes (with an HTTP header) over 127.0.0.1 and the
  client receives them into a buffer and hashes them: no HTTP stack, no server work;
* ``uvicorn + httpx``: ``GET`` of the same bytes from a bare ASGI app (no routing, no auth, no
  storage) on uvicorn with uvloop and httptools, read by streaming with httpx and hashed;
* ``uvicorn + lean``: the same app read with the scenario's client (``benchmarks.lean_http``:
  ``http.client``, hashed in 256 KiB pieces as they arrive).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from benchmarks.lean_http import LeanHttp
from syncserver.testing import ROOT, free_port

MiB = 1024 * 1024
PHOTO = os.urandom(2 * MiB)


async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    """The bare ASGI app: every GET answers the photo in one body."""
    if scope["type"] != "http":
        return
    headers = [(b"content-length", str(len(PHOTO)).encode()), (b"content-type", b"image/jpeg")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": PHOTO})


def per_photo(n: int, one: Callable[[], object]) -> float:
    for _ in range(5):
        one()
    t0 = time.perf_counter()
    for _ in range(n):
        one()
    return (time.perf_counter() - t0) / n


def raw_read(n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "photo.jpg"
        path.write_bytes(PHOTO)
        return per_photo(n, lambda: hashlib.sha256(path.read_bytes()).digest())


def aes_open(n: int) -> float:
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    nonce = os.urandom(12)
    sealed = [aead.encrypt(nonce, PHOTO[i : i + MiB], b"aad") for i in (0, MiB)]
    out = bytearray(len(PHOTO))
    view = memoryview(out)

    def one() -> None:
        for i, blob in enumerate(sealed):
            aead.decrypt_into(nonce, blob, b"aad", view[i * MiB : (i + 1) * MiB])

    return per_photo(n, one)


def _chunk_files(tmp: str) -> tuple[Any, list[str], int]:
    from obstore.store import LocalStore

    length = MiB + 28  # a sealed 1 MiB chunk: the format byte, nonce and tag
    for i in range(2):
        (Path(tmp) / f"chunk-{i}").write_bytes(os.urandom(length))
    return LocalStore(tmp), [f"chunk-{i}" for i in range(2)], length


def obstore_read(n: int) -> float:
    import obstore
    import uvloop

    with tempfile.TemporaryDirectory() as tmp:
        store, keys, length = _chunk_files(tmp)

        async def run() -> float:
            async def one() -> None:
                await asyncio.gather(*(obstore.get_range_async(store, k, start=0, length=length) for k in keys))

            for _ in range(5):
                await one()
            t0 = time.perf_counter()
            for _ in range(n):
                await one()
            return (time.perf_counter() - t0) / n

        return uvloop.run(run())


def pread_read(n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        _, keys, length = _chunk_files(tmp)

        def one() -> None:
            for key in keys:
                fd = os.open(Path(tmp) / key, os.O_RDONLY)
                try:
                    os.pread(fd, length, 0)
                finally:
                    os.close(fd)

        return per_photo(n, one)


def loopback(n: int) -> float:
    listener = socket.create_server(("127.0.0.1", 0))
    response = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(PHOTO) + PHOTO

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while conn.recv(65536):
                conn.sendall(response)

    threading.Thread(target=serve, daemon=True).start()
    client = socket.create_connection(listener.getsockname())
    buffer = bytearray(len(response))
    view = memoryview(buffer)

    def one() -> None:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        got = 0
        while got < len(response):
            got += client.recv_into(view[got:])
        hashlib.sha256(view[len(response) - len(PHOTO) :]).digest()

    try:
        return per_photo(n, one)
    finally:
        client.close()
        listener.close()


@contextmanager
def bare_uvicorn() -> Iterator[str]:
    """The bare ASGI app on uvicorn (uvloop, httptools); yields its base URL once it answers."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "benchmarks.attachments_floor:app", "--port", str(port)]
    argv += ["--loop", "uvloop", "--http", "httptools", "--log-level", "warning"]
    server = subprocess.Popen(argv, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(base + "/")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=10)


def uvicorn_httpx(n: int) -> float:
    with bare_uvicorn() as base, httpx.Client(base_url=base, timeout=30) as http:

        def one() -> None:
            sha = hashlib.sha256()
            with http.stream("GET", "/") as r:
                for piece in r.iter_raw():
                    sha.update(piece)

        return per_photo(n, one)


def uvicorn_lean(n: int) -> float:
    with bare_uvicorn() as base, LeanHttp(base, timeout=30) as http:
        return per_photo(n, lambda: http.get_sha256("/", {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=200)
    n = parser.parse_args().photos
    base = raw_read(n)
    print(f"{'raw read':<20} {base * 1000:6.2f} ms/photo")
    floors = {
        "AES-256-GCM open": aes_open,
        "obstore local read": obstore_read,
        "os.pread": pread_read,
        "loopback TCP": loopback,
        "uvicorn + httpx": uvicorn_httpx,
        "uvicorn + lean": uvicorn_lean,
    }
    for name, measure in floors.items():
        took = measure(n)
        print(f"{name:<20} {took * 1000:6.2f} ms/photo   raw read ÷ this = {base / took:.2f}x")


if __name__ == "__main__":
    main()
