"""A lean HTTP/1.1 client for byte-heavy benchmarks: one keep-alive connection, bodies read into a buffer.

The attachments scenario moves megabytes per request. httpx parses responses in pure Python
(h11) and hands the body over in 64 KiB pieces, which on two shared cores costs the client more
than the server spends on the request (``python -m benchmarks.attachments_floor`` measures both).
A browser or a phone downloads with native code, so a pure-Python client would make the ratio
measure the load generator instead of the server. This one uses the standard library's
``http.client`` and ``readinto`` straight into a reused buffer, hashing each piece as it arrives.
"""

from __future__ import annotations

import hashlib
import http.client
from urllib.parse import urlsplit


class HttpError(RuntimeError):
    """An answer with an unexpected status."""


class LeanHttp:
    """One keep-alive connection to ``base`` (``http://host:port``); reconnects if the server closed it."""

    def __init__(self, base: str, timeout: float = 120.0, buffer_bytes: int = 256 * 1024) -> None:
        parts = urlsplit(base)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout = timeout
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        self.buffer = bytearray(buffer_bytes)

    def __enter__(self) -> LeanHttp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None = None
    ) -> http.client.HTTPResponse:
        """Send one request and return the response with its headers read and its body not yet read.

        A keep-alive connection the server closed while it sat idle (Node's servers close them after 5 s)
        fails as the request goes out, before the server has read anything: then the request is sent
        once more, on a new connection, as httpx's pool does.
        """
        try:
            self.conn.request(method, path, body=body, headers=headers)
            return self.conn.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            self.conn.close()
            self.conn.request(method, path, body=body, headers=headers)
            return self.conn.getresponse()

    def call(self, method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> tuple[int, bytes]:
        """One request whose (small) answer is read whole: ``(status, body)``."""
        r = self.request(method, path, headers, body)
        return r.status, r.read()

    def expect(
        self, status: int, method: str, path: str, headers: dict[str, str], body: bytes | None = None
    ) -> http.client.HTTPResponse:
        """One request that must answer ``status``; the body is read (and dropped) so the connection is reusable."""
        r = self.request(method, path, headers, body)
        text = r.read()
        if r.status != status:
            raise HttpError(f"{method} {path} answered {r.status}, not {status}: {text[:300]!r}")
        return r

    def get_sha256(self, path: str, headers: dict[str, str], step: int = 256 * 1024) -> str:
        """GET a body and hash it as it arrives, ``step`` bytes at a time into the reused buffer.

        Hashing each piece while the server still sends the next uses both cores, as a device's
        native HTTP stack and hashing would; pieces of 256 KiB measured fastest on loopback.
        """
        r = self.request("GET", path, headers)
        if r.status != 200:
            raise HttpError(f"GET {path} answered {r.status}: {r.read()[:300]!r}")
        sha = hashlib.sha256()
        view = memoryview(self.buffer)[:step]
        while n := r.readinto(view):
            sha.update(view[:n])
        return sha.hexdigest()
