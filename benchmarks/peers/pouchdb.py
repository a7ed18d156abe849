"""Peer: PouchDB-server 4.2.0 (CouchDB's HTTP replication protocol on LevelDB), run locally.

Installed with npm into ``benchmarks/.peers/pouchdb`` once and cached there.
Each run starts it on a free loopback port with a fresh data directory::

    node .../pouchdb-server --host 127.0.0.1 --port P --dir DATA --config DATA/config.json --no-stdout-logs

and stops it by PID. The same workloads as ours: creates as ``_bulk_docs``,
updates as ``_bulk_docs`` with each document's ``_rev``, and a fresh pull as
``_changes?include_docs=true`` in pages. If npm is missing or the install
fails, :class:`PeerUnavailable` says why and the peer is skipped: never faked.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import msgspec

from benchmarks.lean_http import LeanHttp
from benchmarks.peers import npm
from benchmarks.peers.npm import PeerUnavailable
from syncserver.testing import free_port, stop

VERSION = "4.2.0"
PEER_DIR = Path(__file__).resolve().parents[1] / ".peers" / "pouchdb"
PACKAGE = PEER_DIR / "node_modules" / "pouchdb-server"
READY_TIMEOUT_S = 60.0
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
JSON_HEADERS = {"Content-Type": "application/json"}


def installed_version() -> str | None:
    return npm.package_version(PACKAGE)


def is_installed() -> bool:
    return installed_version() == VERSION


def install() -> None:
    """``npm install pouchdb-server@4.2.0`` into the cache directory (a no-op when already there)."""
    npm.install(PEER_DIR, "PouchDB-server", {"pouchdb-server": VERSION}, is_installed)


@dataclass
class PouchDB:
    """A running PouchDB-server. ``lean`` carries the measured requests (bulk writes, ``_changes``) with the
    same client as ours (``benchmarks.lean_http``), so a ratio between the two compares servers, not
    clients; ``http`` serves the untimed ones."""

    base: str
    pid: int
    http: httpx.Client
    lean: LeanHttp

    def create_db(self, name: str) -> str:
        r = self.http.put(f"/{name}")
        if r.status_code not in (201, 202):
            raise RuntimeError(f"PouchDB: creating {name} answered {r.status_code}: {r.text[:200]}")
        return name

    def bulk_docs(self, db: str, body: bytes) -> list[dict[str, Any]]:
        status, content = self.lean.call("POST", f"/{db}/_bulk_docs", JSON_HEADERS, body)
        if status not in (201, 202):
            raise RuntimeError(f"PouchDB _bulk_docs answered {status}: {content[:200]!r}")
        results: list[dict[str, Any]] = _decode(content)
        bad = [x for x in results if not x.get("ok")]
        if bad:
            raise RuntimeError(f"PouchDB rejected {len(bad)} docs: {bad[:3]}")
        return results

    def changes_to_end(self, db: str, page: int) -> tuple[int, dict[str, Any]]:
        """A fresh client's pull: ``_changes?include_docs=true`` page by page; (docs, last doc seen)."""
        since: Any = 0
        count, last = 0, dict[str, Any]()
        while True:
            query = urlencode({"include_docs": "true", "limit": page, "since": since})
            status, content = self.lean.call("GET", f"/{db}/_changes?{query}", {})
            if status != 200:
                raise RuntimeError(f"PouchDB _changes answered {status}: {content[:200]!r}")
            body = _decode(content)
            results = body["results"]
            if not results:
                return count, last
            count += len(results)
            last = results[-1]["doc"]
            since = body["last_seq"]


def bulk_bodies(docs: list[dict[str, Any]], batch: int) -> list[bytes]:
    return [_encode({"docs": docs[i : i + batch]}) for i in range(0, len(docs), batch)]


@contextmanager
def pouchdb_server(tmp: Path) -> Iterator[PouchDB]:
    """Start PouchDB-server on a free port with a fresh data directory; stop it by PID."""
    if not is_installed():
        raise PeerUnavailable(f"PouchDB-server {VERSION} is not installed in {PEER_DIR}")
    node = shutil.which("node")
    if node is None:
        raise PeerUnavailable("PouchDB-server skipped: node is not installed on this machine")
    data = tmp / "pouchdb-data"
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [node, str(PACKAGE / "bin" / "pouchdb-server"), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--dir", str(data), "--config", str(data / "config.json"), "--no-stdout-logs"]
    log = tmp / "pouchdb.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=data, stdout=out, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(base, proc, log)
            with (
                httpx.Client(base_url=base, timeout=httpx.Timeout(300.0, connect=30.0)) as http,
                LeanHttp(base) as lean,
            ):
                yield PouchDB(base, proc.pid, http, lean)
        finally:
            stop(proc)


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PeerUnavailable(f"PouchDB-server exited at start: {log.read_text(errors='replace')[-500:]}")
        try:
            if httpx.get(base + "/", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise PeerUnavailable(f"PouchDB-server was not ready within {READY_TIMEOUT_S:.0f} s")
