"""The benchmarks' lean HTTP client survives a server that closes idle keep-alive connections."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from benchmarks.lean_http import LeanHttp


class ClosesAfterEachAnswer(BaseHTTPRequestHandler):
    """Answers over HTTP/1.1 without ``Connection: close``, then drops the connection, as a server whose
    keep-alive timeout expired does."""

    protocol_version = "HTTP/1.1"
    bodies: list[bytes] = []

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(201)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ClosesAfterEachAnswer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_request_on_a_connection_the_server_closed_goes_out_again_on_a_new_one(base: str) -> None:
    ClosesAfterEachAnswer.bodies = []
    with LeanHttp(base) as http:
        answers = [http.call("POST", "/db/_bulk_docs", {}, f"batch-{i}".encode()) for i in range(3)]
    assert answers == [(201, b"ok")] * 3
    assert ClosesAfterEachAnswer.bodies == [b"batch-0", b"batch-1", b"batch-2"], "each batch arrived once"
