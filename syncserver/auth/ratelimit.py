"""Rate limiting per bearer token, with Litestar's ``RateLimitMiddleware``.

``SYNC_RATE_LIMIT`` is ``<requests>/<second|minute|hour|day>`` (default
``50/second``) or ``off``. Requests are counted per token (a device's token;
the key is a SHA-256 of the token, never the token itself) or, without one,
per client address. Over the limit the server answers 429 ``rate_limited``
with ``Retry-After`` and the ``RateLimit-*`` headers.

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
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast, get_args

from litestar import Litestar, Request
from litestar.middleware.base import DefineMiddleware
from litestar.middleware.rate_limit import DurationUnit, RateLimitConfig, get_remote_address
from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore
from redis.exceptions import RedisError

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


def identify(request: Request[Any, Any, Any]) -> str:
    """The counter key: a digest of the bearer token, or the client address without one."""
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "token:" + hashlib.sha256(token.strip().encode()).hexdigest()[:32]
    return "addr:" + get_remote_address(request)


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

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiting:
        rate = parse_rate(settings.rate_limit)
        config = None
        if rate is not None:
            config = RateLimitConfig(
                rate_limit=rate, identifier_for_request=identify, store=STORE_NAME, exclude=EXCLUDE
            )
        url = settings.redis_url
        if url is not None and url.startswith(("redis://", "rediss://")):
            from litestar.stores.redis import RedisStore  # only deployments with Redis import the client

            redis = RedisStore.with_client(url=url, namespace=settings.redis_prefix + "ratelimit")
            return cls(config, FailOpenStore(redis, MemoryStore()))
        return cls(config)

    @property
    def middleware(self) -> list[DefineMiddleware]:
        return [] if self.config is None else [self.config.middleware]

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
