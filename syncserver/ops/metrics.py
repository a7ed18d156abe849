"""Operations: Prometheus metrics, structured JSON logs and a request id on every response.

Metrics live in prometheus-client's default registry, served at ``/metrics``
by Litestar's ``PrometheusController``. HTTP requests are counted and timed by
Litestar's ``PrometheusMiddleware`` (``sync_requests_total`` and
``sync_request_duration_seconds`` by method, path template and status: push
is ``path="/v1/sync/push"``, pull ``path="/v1/sync/pull"``). The sync metrics
below are module-level, as prometheus-client expects (one per process);
other subsystems update them directly::

    from syncserver import observability
    observability.WS_CONNECTIONS.inc()          # a WebSocket opened (dec() when it closes)
    observability.WS_UNAUTHENTICATED.inc()      # ... and has not authenticated yet (dec() once it has)
    observability.FANOUT_LAG.observe(0.012)     # commit -> delivered to a subscriber, seconds

With several worker processes, set ``PROMETHEUS_MULTIPROC_DIR`` (see the
operations guide).

Logs are JSON lines on stderr (``SYNC_LOG_FORMAT=text`` for humans). Every
line logged while a request is handled carries its ``request_id``, which is
also echoed in the ``X-Request-ID`` response header; a client may send its
own (1-128 characters of ``A-Za-z0-9._:-``). Nothing here ever logs a header,
a body, a query string or a payload value.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

from litestar import Response, get
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.logging.config import LoggingConfig
from litestar.middleware import ASGIMiddleware
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from syncproto.messages import Applied, Duplicate, OutOfOrder, PushResult, Rejected
from syncstore.records import PushBatch

REQUEST_ID_HEADER = "x-request-id"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
access_log = logging.getLogger("syncserver.access")

# --- metrics -----------------------------------------------------------------

CHANGES = Counter("sync_changes_total", "Pushed changes by result.", ["result"])
CONFLICTS = Counter("sync_conflicts_total", "Conflicts recorded by merges, by kind.", ["kind"])
PUSH_CHANGES = Histogram(
    "sync_push_changes", "Changes per push request.", buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)
)
WS_CONNECTIONS = Gauge("sync_websocket_connections", "Open WebSocket connections.", multiprocess_mode="livesum")
WS_UNAUTHENTICATED = Gauge(
    "sync_websocket_unauthenticated_connections",
    "Accepted WebSocket connections that have not authenticated yet.",
    multiprocess_mode="livesum",
)
WS_UNAUTHENTICATED_REFUSED = Counter(
    "sync_websocket_unauthenticated_refused",
    "WebSocket connections refused (4429): their address held too many unauthenticated ones.",
)
FANOUT_LAG = Histogram(
    "sync_fanout_lag_seconds",
    "Time from a push commit to the change being sent to a subscriber.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

_RESULT_NAMES: dict[type, str] = {
    Applied: "applied",
    Duplicate: "duplicate",
    OutOfOrder: "out_of_order",
    Rejected: "rejected",
}


def observe_push(batch: PushBatch, results: list[PushResult]) -> None:
    """``PushService`` hook: count results and the conflicts the merge recorded."""
    PUSH_CHANGES.observe(len(results))
    counts: dict[str, int] = {}
    for result in results:
        name = _RESULT_NAMES[type(result)]
        counts[name] = counts.get(name, 0) + 1
    for name, count in counts.items():
        CHANGES.labels(name).inc(count)
    for conflict in batch.conflicts:
        CONFLICTS.labels(conflict.kind).inc()


class _KeyCacheCollector(Collector):
    """Sums the hit and miss counters of every ``TenantKeyring`` at scrape time.

    It keeps each keyring's small ``CacheStats`` (not the keyring) for good, so
    the sums never go down when an old keyring is garbage-collected: a
    Prometheus counter must be monotonic.
    """

    def __init__(self) -> None:
        self.stats: list[Any] = []

    def collect(self) -> Iterator[CounterMetricFamily]:
        stats = list(self.stats)
        hits = CounterMetricFamily("sync_key_cache_hits", "Tenant data-key cache hits.")
        hits.add_metric([], float(sum(s.hits for s in stats)))
        misses = CounterMetricFamily("sync_key_cache_misses", "Tenant data-key cache misses (unwraps).")
        misses.add_metric([], float(sum(s.misses for s in stats)))
        yield hits
        yield misses


_KEY_CACHE = _KeyCacheCollector()
REGISTRY.register(_KEY_CACHE)


def watch_keyring(keyring: Any) -> None:
    """Export a keyring's cache hits and misses (its stats are kept, not the keyring)."""
    _KEY_CACHE.stats.append(keyring.stats)


def prometheus_config() -> PrometheusConfig:
    """HTTP metrics by path template; health checks and the scrape itself are not counted."""
    return PrometheusConfig(
        app_name="syncserver",
        prefix="sync",
        group_path=True,
        exclude_unhandled_paths=True,
        exclude=["^/metrics", "^/health", "^/schema"],
        # A WebSocket's "request" lasts as long as the connection: see sync_websocket_connections instead.
        scopes={ScopeType.HTTP},
    )


class MetricsController(PrometheusController):
    """``GET /metrics``: Prometheus text format, documented as such (Litestar's handler would say JSON)."""

    path = "/metrics"
    tags = ["operations"]

    @get(
        summary="Prometheus metrics",
        media_type=CONTENT_TYPE_LATEST,
        description="Prometheus text exposition format; scrape it on the internal network.",
    )
    async def get(self) -> Response[bytes]:
        served: Response[bytes] = await PrometheusController.get.fn(self)
        return served


# --- request ids and access logs -------------------------------------------------


class RequestIdMiddleware(ASGIMiddleware):
    """Takes or makes a request id, binds it for logging, echoes it, and writes one access line."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        rid = _incoming_id(scope) or uuid.uuid4().hex
        request_id.set(rid)
        scope["state"]["request_id"] = rid
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableScopeHeaders.from_message(message)[REQUEST_ID_HEADER] = rid
            await send(message)

        method = str(scope.get("method", "GET"))
        path = str(scope.get("path_template", scope["path"]))
        try:
            await next_app(scope, receive, send_with_id)
        except Exception as exc:
            # Answered by an exception handler outside this middleware (auth failures, for one).
            status = _status_of(exc)
            raise
        finally:
            access_log.info(
                "%s %s %s",
                method,
                path,
                status,
                extra={
                    "method": method,
                    "path": path,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )


def _status_of(exc: Exception) -> int:
    for name in ("status_code", "status"):
        status = getattr(exc, name, None)
        if isinstance(status, int):
            return status
    return 500


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER.encode():
            text = value.decode("latin-1")
            return text if _VALID_ID.match(text) else None
    return None


async def request_id_for_unrouted(message: Message, scope: Scope) -> None:
    """``before_send`` hook: responses that never reached a route (404, 405) get an id too."""
    if message["type"] == "http.response.start":
        headers = MutableScopeHeaders.from_message(message)
        if REQUEST_ID_HEADER not in headers:
            headers[REQUEST_ID_HEADER] = scope.get("state", {}).get("request_id") or uuid.uuid4().hex


# --- logging -------------------------------------------------------------------


class RequestIdFilter(logging.Filter):
    """Adds the current request id (or ``None``) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def logging_config(level: str = "INFO", fmt: str = "json") -> LoggingConfig:
    """Litestar's logging config: one stderr handler for the root, Litestar's and uvicorn's loggers."""
    formatters: dict[str, dict[str, Any]] = {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            "datefmt": "%Y-%m-%dT%H:%M:%S%z",
        },
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    }
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "json" if fmt == "json" else "text",
        "filters": ["request_id"],
        "stream": "ext://sys.stderr",
    }
    quiet = {"handlers": ["console"], "level": "WARNING", "propagate": False}
    return LoggingConfig(
        formatters=formatters,
        filters={"request_id": {"()": RequestIdFilter}},
        handlers={"console": handler, "queue_listener": handler},
        root={"handlers": ["console"], "level": level.upper()},
        loggers={
            "litestar": {"handlers": ["console"], "level": level.upper(), "propagate": False},
            "uvicorn": {"handlers": ["console"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"handlers": ["console"], "level": level.upper(), "propagate": False},
            # Our access lines carry the request id; uvicorn's would repeat them without it.
            "uvicorn.access": quiet,
            # SQL echo and the SQLite driver's debug lines would print bound parameters.
            "sqlalchemy.engine": quiet,
            "aiosqlite": quiet,
        },
        log_exceptions="never",
    )
