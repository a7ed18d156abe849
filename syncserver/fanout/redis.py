"""Fan-out through Redis pub/sub, for several server processes sharing one database.

Redis carries only ``{tenant, seq, origin}`` notices on one channel
(``<key_prefix>changes``); the data always comes from the log. Design points:

* Local listeners are called directly by ``publish``, so a process keeps serving
  its own subscribers while Redis is down.
* ``publish`` never waits for Redis: notices are coalesced per tenant (the
  highest seq wins) and sent by a background task, which keeps them and retries
  with backoff while Redis is unreachable.
* The subscriber reconnects with exponential backoff and equal jitter (redis-py's
  ``EqualJitterBackoff``: half the delay fixed, half random); every
  (re)subscription calls ``resync()`` on the listeners, because notices sent
  while it was away are lost. A lost notice therefore only delays a change.
* Redis' own retries are off (``retries=0``): this module owns reconnection, so
  it always knows whether Redis is up (``checks()``, shown by ``/health/ready``).
* The subscriber sends a ``PING`` every ``ping_s`` and counts its connection
  lost when nothing (no notice, no pong) has come back for ``ping_s +
  timeout_s``. Without it a connection cut without a reset (a NAT or a
  firewall that dropped it, a host that vanished) looked healthy forever: the
  subscriber only polls, readiness said ``ok``, and every remote change waited
  for the live hub's periodic resync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from syncserver.fanout.interface import FanoutListener
from syncserver.fanout.memory import Listeners

log = logging.getLogger("syncserver.fanout")


class _Notice(msgspec.Struct, gc=False):
    tenant: str
    seq: int
    origin: str


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Notice).decode


def _describe(exc: BaseException) -> str:
    return f"down: {type(exc).__name__}: {exc}"[:200]


class RedisFanout:
    """Fan-out over Redis pub/sub with local delivery first; see the module docs."""

    def __init__(
        self,
        url: str,
        key_prefix: str = "sync:",
        *,
        min_backoff_s: float = 0.05,
        max_backoff_s: float = 2.0,
        timeout_s: float = 2.0,
        ping_s: float = 5.0,
    ) -> None:
        self.channel = f"{key_prefix}changes"
        self._url = url
        self._timeout_s = timeout_s
        self._ping_s = ping_s
        self._backoff = EqualJitterBackoff(cap=max_backoff_s, base=min_backoff_s)
        self._origin = secrets.token_hex(8)
        self._listeners = Listeners()
        self._pending: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._redis: Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._subscriber_state = "down: not started"
        self._publisher_error: str | None = None
        self.connects = 0
        """How many times the subscriber (re)subscribed; tests and metrics read it."""

    async def start(self) -> None:
        self._redis = Redis.from_url(
            self._url,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=self._timeout_s,
            socket_timeout=self._timeout_s,
        )
        self._tasks = [
            asyncio.create_task(self._subscribe_forever(self._redis), name="fanout-redis-subscriber"),
            asyncio.create_task(self._publish_forever(self._redis), name="fanout-redis-publisher"),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        self._subscriber_state = "down: stopped"

    async def publish(self, tenant: str, seq: int) -> None:
        self._listeners.changed(tenant, seq)
        if seq > self._pending.get(tenant, 0):
            self._pending[tenant] = seq
        self._wake.set()

    def subscribe(self, listener: FanoutListener) -> Callable[[], None]:
        return self._listeners.add(listener)

    def checks(self) -> dict[str, str]:
        if self._subscriber_state != "ok":
            return {"redis": self._subscriber_state}
        return {"redis": self._publisher_error or "ok"}

    async def _subscribe_forever(self, redis: Redis) -> None:
        failures = 0
        while True:
            pubsub: PubSub = redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._subscriber_state = "ok"
                self.connects += 1
                failures = 0
                self._listeners.resync()
                await self._listen(pubsub)
            except (RedisError, OSError) as exc:
                if self._subscriber_state == "ok":
                    log.warning("redis fan-out lost (%s); local subscribers are still served; retrying", exc)
                self._subscriber_state = _describe(exc)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(self._backoff.compute(failures))
            failures = min(failures + 1, 32)  # the delay is capped long before; keep the exponent small

    async def _listen(self, pubsub: PubSub) -> None:
        """Deliver notices until the connection fails, or stays silent past a ``PING`` (see the module docs)."""
        clock = asyncio.get_running_loop().time
        heard = pinged = clock()
        poll_s = min(1.0, self._ping_s)
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=poll_s)
            now = clock()
            if message is not None:
                heard = now
                if message["type"] == "message":
                    self._receive(message["data"])
            if now - heard > self._ping_s + self._timeout_s:
                raise RedisConnectionError(f"no answer from redis for {now - heard:.1f} s")
            if now - pinged >= self._ping_s:
                await pubsub.ping()  # its pong comes back through get_message
                pinged = now

    def _receive(self, data: bytes) -> None:
        try:
            notice = _decode(data)
        except msgspec.DecodeError:
            log.warning("ignoring a malformed fan-out notice on %s", self.channel)
            return
        if notice.origin != self._origin:
            self._listeners.changed(notice.tenant, notice.seq)

    async def _publish_forever(self, redis: Redis) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, {}
            if not batch:
                continue
            try:
                async with redis.pipeline(transaction=False) as pipe:
                    for tenant, seq in batch.items():
                        pipe.publish(self.channel, _encode(_Notice(tenant, seq, self._origin)))
                    await pipe.execute()
                self._publisher_error = None
                failures = 0
            except (RedisError, OSError) as exc:
                self._publisher_error = _describe(exc)
                for tenant, seq in batch.items():  # keep them; the newest seq per tenant is enough
                    if seq > self._pending.get(tenant, 0):
                        self._pending[tenant] = seq
                self._wake.set()
                await asyncio.sleep(self._backoff.compute(failures))
                failures = min(failures + 1, 32)  # the delay is capped long before; keep the exponent small
