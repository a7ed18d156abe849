"""Rate limiting per identity, with Litestar's ``RateLimitMiddleware``.

``SYNC_RATE_LIMIT`` is ``<requests>/<second|minute|hour|day>`` (default
``50/second``) or ``off``. Requests are counted per verified identity (the
token's tenant and ``sub``, checked with the app's ``TokenVerifier``, which
caches verifications; the key is a SHA-256 of the two, never the token) or,
without a token that verifies (none, junk, forged, expired), per client
address as the ASGI server reports it (behind a proxy, uvicorn's
``--forwarded-allow-ips``). So a flood of distinct bad tokens shares its
address's budget, and two spellings of one token share one budget. Over the
limit the server answers 429 ``rate_limited`` with ``Retry-After`` and the
``RateLimit-*`` headers.

The WebSocket channel counts in the same budget and store (Litestar's
middleware runs for HTTP only): its upgrade (once the credential is read) and
each ``push``. Over the limit it answers an ``error`` ``rate_limited`` with
``retry_after`` (seconds); a refused upgrade then closes with 4429.

The counts live in Litestar's in-memory store by default, so each server
process counts alone. With ``SYNC_REDIS_URL=redis://...`` they live in
Litestar's ``RedisStore`` (under ``<SYNC_REDIS_PREFIX>ratelimit``), so the limit
holds across processes. Litestar keeps one list of request times per key, so a
per-second limit is far cheaper than the same budget per minute. Under Redis,
two processes may both admit the last request of a window (read, then write):
the limit is exact per process and approximate across them. If Redis is
unreachable the limiter fails open to per-process counts (``FailOpenStore``):
it keeps protecting each process and never turns an outage into errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast, get_args

import anyio
from litestar import Litestar, Request
from litestar.middleware.base import DefineMiddleware
from litestar.middleware.rate_limit import CacheObject, DurationUnit, RateLimitConfig, RateLimitMiddleware
from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore
from litestar.types import ASGIApp, Receive, Scope, Send
from redis.exceptions import RedisError

from syncserver.auth.tokens import Principal, TokenVerifier
from syncserver.errors import ApiError
from syncserver.settings import Settings

log = logging.getLogger("syncserver.ratelimit")

STORE_NAME = "rate_limit"
EXCLUDE = ["^/health", "^/schema", "^/metrics"]
SWEEP_S = 60.0
"""How often expired counters are dropped from the in-memory store."""


def parse_rate(value: str) -> tuple[DurationUnit, int] | None:
    """``"50/second"`` -> ``("second", 50)``; ``"off"`` or ``"0"`` -> ``None``."""
    text = value.strip().lower()
    if text in ("", "off", "0", "none"):
        return None
    count, _, unit = text.partition("/")
    if not count.isdigit() or unit not in get_args(DurationUnit):
        raise ValueError(f"SYNC_RATE_LIMIT must look like 50/second, 600/minute or off, not {value!r}")
    return None if int(count) == 0 else (cast(DurationUnit, unit), int(count))


def identity(principal: Principal) -> str:
    """The counter key of a verified token: a digest of its tenant and ``sub`` (every spelling, every token of
    one user shares it)."""
    return "user:" + hashlib.sha256(f"{principal.tenant}\0{principal.sub}".encode()).hexdigest()[:32]


def address(scope: Scope | dict[str, Any]) -> str:
    """The counter key without a verified token: the client address, as the ASGI server reports it (behind a
    proxy it is the proxy's unless uvicorn trusts its ``X-Forwarded-For``: ``--forwarded-allow-ips``)."""
    client = scope.get("client")
    return "addr:" + (str(client[0]) if client else "unknown")


def identify(request: Request[Any, Any, Any]) -> str:
    """The counter key of an HTTP request: its verified identity, or its client address without one.

    Keyed on the token string, every junk token (and every spelling of one token that the JWT decoder
    accepts) would get a fresh budget and a store entry of its own.
    """
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        verifier: TokenVerifier = request.app.state.verifier
        try:
            return identity(verifier.verify(token.strip()))
        except ApiError:
            pass  # refused by authentication next; counted against the address meanwhile
    return address(request.scope)


class SharedRateLimitMiddleware(RateLimitMiddleware):
    """Litestar's middleware, whose check the WebSocket channel also calls (``RateLimiting.hit``).

    Litestar builds one instance per route, each with a lock of its own; these share one (``lock``), so
    that within a process the read-then-write of a key's history is atomic across routes and the channel.
    """

    def __init__(self, app: ASGIApp, config: RateLimitConfig, lock: anyio.Lock | None = None) -> None:
        super().__init__(app, config)
        if lock is not None:
            self._lock = lock

    async def hit(self, identifier: str, store: Store) -> CacheObject | None:
        """Count one request of ``identifier``, as ``__call__`` does: None if admitted, else its history."""
        key = f"{type(self).__name__}::{identifier}"  # the key ``cache_key_from_request`` gives a route
        async with self._lock:
            cache_object = await self.retrieve_cached_history(key, store)
            if len(cache_object.history) >= self.max_requests:
                return cache_object
            await self.set_cached_history(key=key, cache_object=cache_object, store=store)
        return None


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:  # pragma: no cover - never called
    raise RuntimeError("the WebSocket's rate-limit check calls no app")


class FailOpenStore(Store):
    """Counts in ``primary`` (Redis) and falls back to ``fallback`` (this process) when it fails.

    Rate limiting protects the server; it must not take it down. With Redis
    unreachable, each process keeps limiting on its own (per-process counts)
    instead of answering every request with an error, and returns to the shared
    counts as soon as Redis answers again.
    """

    def __init__(self, primary: Store, fallback: Store) -> None:
        self.primary = primary
        self.fallback = fallback
        self.degraded = False

    async def _call(self, method: str, *args: Any) -> Any:
        try:
            result = await getattr(self.primary, method)(*args)
        except (OSError, RedisError) as exc:
            if not self.degraded:
                log.warning("rate-limit store unavailable (%s); counting per process", type(exc).__name__)
            self.degraded = True
            return await getattr(self.fallback, method)(*args)
        self.degraded = False
        return result

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        await self._call("set", key, value, expires_in)

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        value: bytes | None = await self._call("get", key, renew_for)
        return value

    async def delete(self, key: str) -> None:
        await self._call("delete", key)

    async def delete_all(self) -> None:
        await self._call("delete_all")

    async def exists(self, key: str) -> bool:
        return bool(await self._call("exists", key))

    async def expires_in(self, key: str) -> int | None:
        value: int | None = await self._call("expires_in", key)
        return value

    async def __aexit__(self, *exc: object) -> None:
        await self.primary.__aexit__(*exc)  # type: ignore[arg-type]
        await self.fallback.__aexit__(*exc)  # type: ignore[arg-type]


@dataclass
class RateLimiting:
    """The middleware, the store it counts in, and a lifespan that looks after that store."""

    config: RateLimitConfig | None
    store: Store = field(default_factory=MemoryStore)
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    _checker: SharedRateLimitMiddleware | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.config is not None:
            self._checker = SharedRateLimitMiddleware(_no_app, self.config, self.lock)

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiting:
        rate = parse_rate(settings.rate_limit)
        config = None
        if rate is not None:
            config = RateLimitConfig(
                rate_limit=rate,
                identifier_for_request=identify,
                store=STORE_NAME,
                exclude=EXCLUDE,
                middleware_class=SharedRateLimitMiddleware,
            )
        url = settings.redis_url
        if url is not None and url.startswith(("redis://", "rediss://")):
            from litestar.stores.redis import RedisStore  # only deployments with Redis import the client

            redis = RedisStore.with_client(url=url, namespace=settings.redis_prefix + "ratelimit")
            return cls(config, FailOpenStore(redis, MemoryStore()))
        return cls(config)

    @property
    def middleware(self) -> list[DefineMiddleware]:
        if self.config is None:
            return []
        return [DefineMiddleware(SharedRateLimitMiddleware, config=self.config, lock=self.lock)]

    async def hit(self, identifier: str) -> int | None:
        """Count one WebSocket request (an upgrade, a push) of ``identifier`` (``identity`` or ``address``) in
        the HTTP budget and store: None if admitted, else the seconds to wait (as HTTP's ``Retry-After``)."""
        if self._checker is None:
            return None
        refused = await self._checker.hit(identifier, self.store)
        if refused is None:
            return None
        return max(1, refused.reset - int(time.time()))

    @property
    def stores(self) -> dict[str, Store]:
        return {STORE_NAME: self.store}

    @contextlib.asynccontextmanager
    async def lifespan(self, _: Litestar) -> AsyncIterator[None]:
        """Sweep expired in-memory counters; close the Redis client at shutdown."""
        local = self.store.fallback if isinstance(self.store, FailOpenStore) else self.store
        sweeper = asyncio.create_task(self._sweep(local)) if isinstance(local, MemoryStore) else None
        try:
            yield
        finally:
            if sweeper is not None:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper
            await self.store.__aexit__(None, None, None)

    @staticmethod
    async def _sweep(store: MemoryStore) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            await store.delete_expired()
