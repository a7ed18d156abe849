"""Prometheus metrics: HTTP requests, pushes, WebSocket sessions, fan-out lag and the key cache.

Metrics live in prometheus-client's default registry, served at ``/metrics``
by Litestar's ``PrometheusController``. HTTP requests are counted and timed by
Litestar's ``PrometheusMiddleware`` (``sync_requests_total`` and
``sync_request_duration_seconds`` by method, path template and status: push
is ``path="/v1/sync/push"``, pull ``path="/v1/sync/pull"``). The sync metrics
below are module-level, as prometheus-client expects (one per process);
other subsystems update them directly::

    from syncserver.ops import metrics
    metrics.WS_CONNECTIONS.inc()          # a WebSocket opened (dec() when it closes)
    metrics.WS_UNAUTHENTICATED.inc()      # ... and has not authenticated yet (dec() once it has)
    metrics.FANOUT_LAG.observe(0.012)     # commit -> delivered to a subscriber, seconds

With several worker processes, set ``PROMETHEUS_MULTIPROC_DIR`` (see the
operations guide).

Logs and request ids are in ``syncserver.ops.logs``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from litestar import Response, get
from litestar.enums import ScopeType
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from syncproto.messages import Applied, Duplicate, OutOfOrder, PushResult, Rejected
from syncstore.records import PushBatch

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
