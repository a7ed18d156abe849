"""Operations endpoints in process: /metrics, request ids, readiness with the database down, OpenAPI."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncserver.ops import metrics
from tests import services
from tests.integration.conftest import Server, make_settings, start
from tests.integration.test_admin_api import driver, offline_conflict

Sample = tuple[str, tuple[tuple[str, str], ...]]


@pytest.fixture
async def mem(tmp_path: Path) -> AsyncIterator[Server]:
    async for s in start(make_settings(tmp_path, "memory://")):
        yield s


async def scrape(server: Server) -> dict[Sample, float]:
    r = await server.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples: dict[Sample, float] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


async def test_metrics_count_pushes_results_conflicts_and_key_cache(mem: Server) -> None:
    before = await scrape(mem)
    tenant = await mem.tenant()
    await offline_conflict(mem, tenant)  # two applied changes, one register conflict
    device = driver(mem, tenant, "driver-42")
    bad = {"id": "bad-1", "n": 2, "collection": "deliveries", "entity": "dlv-123", "hlc": [1, 0], "context": {}}
    results = await mem.push(device, "phone-b", [{**bad, "ops": [{"op": "inc", "field": "status", "by": 1}]}])
    assert results[0]["status"] == "rejected"
    # Resent, a refused change is refused again (PROTOCOL §4.2); an applied one resent is a duplicate.
    again = await mem.push(device, "phone-b", [{**bad, "ops": [{"op": "inc", "field": "status", "by": 1}]}])
    assert again[0]["status"] == "rejected"
    good = {**bad, "id": "good-3", "n": 3, "ops": [{"op": "add", "field": "scanned", "value": "parcel-9"}]}
    assert [r["status"] for r in await mem.push(device, "phone-b", [good, good])] == ["applied", "duplicate"]
    await mem.pull_all(device)

    after = await scrape(mem)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("sync_changes_total", result="applied") == 3
    assert delta("sync_changes_total", result="rejected") == 2
    assert delta("sync_changes_total", result="duplicate") == 1
    assert delta("sync_conflicts_total", kind="register") == 1
    assert delta("sync_requests_total", path="/v1/sync/push", method="POST", status_code="200") == 5
    assert delta("sync_request_duration_seconds_count", path="/v1/sync/push") == 5
    assert delta("sync_request_duration_seconds_count", path="/v1/sync/pull") >= 1
    assert delta("sync_push_changes_count") == 5
    assert delta("sync_key_cache_hits_total") >= 4
    assert value(after, "sync_key_cache_misses_total") >= 1
    assert ("sync_websocket_connections", ()) in after
    assert ("sync_fanout_lag_seconds_count", ()) in after


async def test_websocket_gauge_and_fanout_lag_are_exported(mem: Server) -> None:
    before = await scrape(mem)
    metrics.WS_CONNECTIONS.inc()
    metrics.FANOUT_LAG.observe(0.02)
    try:
        after = await scrape(mem)
    finally:
        metrics.WS_CONNECTIONS.dec()
    assert value(after, "sync_websocket_connections") == value(before, "sync_websocket_connections") + 1
    assert value(after, "sync_fanout_lag_seconds_count") == value(before, "sync_fanout_lag_seconds_count") + 1


async def test_every_response_carries_a_request_id(mem: Server) -> None:
    tenant = await mem.tenant()
    fresh = await mem.client.get("/health/live")
    assert re.fullmatch(r"[0-9a-f]{32}", fresh.headers["x-request-id"])
    mine = await mem.client.post(
        "/v1/sync/pull", json={}, headers={**mem.headers(tenant, "d"), "X-Request-ID": "trace-42.a:b"}
    )
    assert mine.headers["x-request-id"] == "trace-42.a:b"
    hostile = await mem.client.get("/health/live", headers={"X-Request-ID": "bad id <script>"})
    assert re.fullmatch(r"[0-9a-f]{32}", hostile.headers["x-request-id"])
    for r in (
        await mem.client.get("/no/such/route"),
        await mem.client.post("/v1/sync/pull", json={}),
        await mem.client.post("/v1/sync/push", content=b"{", headers=mem.headers(tenant, "d")),
    ):
        assert r.status_code in (400, 401, 404), r.text
        assert len(r.headers["x-request-id"]) == 32


class Proxy:
    """A TCP forwarder to PostgreSQL that the test takes down and brings back (threads: the app runs elsewhere)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.listener: socket.socket | None = None
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self.port = listener.getsockname()[1]
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        assert self.listener is not None
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self.lock:
            doomed, self.sockets = self.sockets, set()
        for s in doomed:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.sockets |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with self.lock:
                if s in self.sockets:
                    self.sockets.discard(s)
                    s.close()


@pytest.fixture
def migrated_pg(pg_url: str) -> str:
    from syncstore.migrate import upgrade_sync

    upgrade_sync(pg_url)
    return pg_url


@pytest.mark.postgres
async def test_readiness_is_503_with_details_while_the_database_is_down(migrated_pg: str, tmp_path: Path) -> None:
    proxy = Proxy((services.PG_HOST, services.PG_PORT))
    proxy.up()
    url = migrated_pg.replace(f"{services.PG_HOST}:{services.PG_PORT}", f"127.0.0.1:{proxy.port}")
    settings = make_settings(tmp_path, url, migrate_on_start=False)
    async for server in start(settings):
        ok = await server.client.get("/health/ready")
        assert ok.status_code == 200, ok.text
        assert ok.json()["checks"]["database"] == "ok"

        proxy.down()
        down = await server.client.get("/health/ready")
        assert down.status_code == 503
        body: dict[str, Any] = down.json()
        assert body["status"] == "unavailable"
        assert body["checks"]["database"].startswith("down:")
        assert body["checks"]["keys"] == "ok"
        assert (await server.client.get("/health/live")).status_code == 200

        proxy.up()
        again = await server.client.get("/health/ready")
        assert again.status_code == 200, again.text
        proxy.down()


async def test_readiness_is_503_when_the_database_port_is_dead(tmp_path: Path) -> None:
    from syncserver.testing import free_port

    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere"
    async for server in start(make_settings(tmp_path, url, migrate_on_start=False)):
        r = await server.client.get("/health/ready")
        assert r.status_code == 503
        assert r.json()["checks"]["database"].startswith("down:")


async def test_openapi_documents_a_summary_and_error_responses_for_every_endpoint(mem: Server) -> None:
    r = await mem.client.get("/schema/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    operations = [
        (path, method, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method != "parameters"
    ]
    assert {p for p, _, _ in operations} >= {
        "/v1/sync/push",
        "/v1/sync/pull",
        "/v1/admin/conflicts",
        "/v1/admin/conflicts/{conflict_id}/override",
        "/v1/admin/dead-letters/{replica}/{n}/replay",
        "/health/ready",
        "/metrics",
    }
    assert not [p for p, _, _ in operations if p.startswith("/admin")], "HTML pages are not API"
    # Liveness cannot fail, and /metrics is plain text for Prometheus: no error body to document.
    no_errors = {("/health/live", "get"), ("/metrics", "get")}
    for path, method, op in operations:
        assert op.get("summary"), f"{method.upper()} {path} has no summary"
        if (path, method) in no_errors:
            continue
        errors = [code for code in op["responses"] if code.startswith(("4", "5"))]
        assert errors, f"{method.upper()} {path} documents no error response"
        for code in errors:
            assert op["responses"][code].get("description"), f"{method.upper()} {path} {code} has no description"
