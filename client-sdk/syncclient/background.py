"""The background loop behind ``SyncClient.start()``.

It syncs when it (re)connects, shortly after local writes, when a live
transport announces changes, and every ``interval`` seconds otherwise. On
network errors and 5xx it backs off exponentially with jitter; on 429 it waits
for ``Retry-After``. It prefers a live transport (the WebSocket channel) and
falls back to plain HTTP when none connects, trying the live one again later.

A live channel that fails to connect is set aside for ``live_retry_s`` only when
HTTP then reaches the server (a proxy without WebSockets, a connection limit);
when nothing reaches the server, the next attempt starts with the live channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence

from syncclient.backoff import Backoff
from syncclient.errors import ServerError, SyncError
from syncclient.events import ConnectionChanged, Event
from syncclient.transport.interface import LiveTransport, TokenRefreshable, Transport

__all__ = ["BackgroundSync"]

log = logging.getLogger("syncclient")

LiveConnect = Callable[[], Awaitable[LiveTransport]]


class BackgroundSync:
    def __init__(
        self,
        sync: Callable[[Transport], Awaitable[object]],
        fallback: Transport,
        emit: Callable[[Event], None],
        *,
        live: Sequence[LiveConnect] = (),
        interval: float = 30.0,
        debounce: float = 0.05,
        backoff: Backoff | None = None,
        live_retry_s: float = 300.0,
    ) -> None:
        self._sync = sync
        self._fallback = fallback
        self._emit = emit
        self._live = list(live)
        self._interval = interval
        self._debounce = debounce
        self._backoff = backoff or Backoff()
        self._live_retry_s = live_retry_s
        self._live_failed_at: dict[int, float] = {}
        self._unconfirmed: dict[int, float] = {}
        self._wake = asyncio.Event()
        self._online = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state: str | None = None
        self._transport: Transport | None = None
        """The transport of the current connection, while connected."""

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the loop on the running event loop."""
        if self.running:
            return
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="syncclient-background")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self._set_state(ConnectionChanged("stopped"))

    def wake(self) -> None:
        """A local write happened: push soon. Safe from any thread."""
        self._signal(self._wake)

    def refresh_token(self, token: str) -> None:
        """Hand a fresh token to the live session, if one is open. Safe from any thread.

        A session that cannot take it (closed meanwhile, or refused) is dropped
        by the loop, which reconnects with the token the client now holds.
        """

        def send() -> None:
            session: object = self._transport  # HTTP and mocks have no session to refresh
            if isinstance(session, TokenRefreshable) and self._loop is not None:
                task = self._loop.create_task(session.refresh_token(token))
                task.add_done_callback(_log_refresh_failure)

        self._on_loop(send)

    def notify_online(self) -> None:
        """The app knows the network is back: skip the rest of the backoff. Safe from any thread."""
        self._signal(self._online)

    def _signal(self, event: asyncio.Event) -> None:
        self._on_loop(event.set)

    def _on_loop(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop's thread: now if we are on it, else soon. Nothing if the loop is gone."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            same_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            same_loop = False
        if same_loop:
            fn()
        else:
            loop.call_soon_threadsafe(fn)

    def _set_state(self, event: ConnectionChanged) -> None:
        if event.state != self._state or event.state == "offline":
            self._state = event.state
            self._emit(event)

    async def _run(self) -> None:
        while True:
            self._set_state(ConnectionChanged("connecting"))
            transport: Transport | None = None
            try:
                transport = await self._connect()
                self._transport = transport
                while True:
                    await self._sync(transport)
                    # The server answered: live channels that failed just now are refused, not offline.
                    self._live_failed_at.update(self._unconfirmed)
                    self._unconfirmed.clear()
                    self._backoff.reset()
                    self._set_state(ConnectionChanged("online", transport.name))
                    await self._idle(transport)
                    if transport is self._fallback and self._live_due():
                        break  # on HTTP for a while: try the live channel again
                continue
            except SyncError as exc:
                delay = self._delay(exc)
                error = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a bug in a handler or the SDK must not end syncing for good
                log.exception("background sync failed")
                delay = self._backoff.next()
                error = f"{type(exc).__name__}: {exc}"
            finally:
                self._transport = None
                if transport is not None and transport is not self._fallback:
                    await transport.aclose()
            # The fallback failed too: the network is down, so the live channels were not refused.
            self._unconfirmed.clear()
            self._set_state(ConnectionChanged("offline", error=error, retry_in=delay))
            await self._sleep(delay)

    def _delay(self, exc: SyncError) -> float:
        if isinstance(exc, ServerError):
            if exc.retry_after is not None and exc.status in (429, 503):
                return self._backoff.retry_after(exc.retry_after)
            if not exc.retryable:
                # A 4xx (expired token, replica taken) does not heal by retrying soon;
                # ``set_token``/``notify_online`` cut this wait short.
                self._backoff.next()
                return self._backoff.cap
        return self._backoff.next()

    def _live_due(self) -> bool:
        """A live channel exists that has not failed within ``live_retry_s``."""
        now = time.monotonic()
        return any(now - self._live_failed_at.get(i, -math.inf) >= self._live_retry_s for i in range(len(self._live)))

    async def _connect(self) -> Transport:
        now = time.monotonic()
        for i, connect in enumerate(self._live):
            if now - self._live_failed_at.get(i, -math.inf) < self._live_retry_s:
                continue
            try:
                return await connect()
            except Exception as exc:  # whatever breaks the live channel, HTTP must still sync
                log.info("live transport unavailable (%s); trying %s", exc, self._fallback.name)
                # Skipped for ``live_retry_s`` only if the fallback then reaches the server:
                # when the whole network is down, the live channel is tried first again.
                self._unconfirmed[i] = now
        return self._fallback

    async def _idle(self, transport: Transport) -> None:
        """Wait for a reason to sync again; raise if a live connection drops."""
        waits: list[asyncio.Task[object]] = [
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(self._online.wait()),
        ]
        if isinstance(transport, LiveTransport):
            waits.append(asyncio.ensure_future(transport.wait_for_changes(self._interval)))
        else:
            waits.append(asyncio.ensure_future(asyncio.sleep(self._interval)))
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        for task in done:
            if not task.cancelled() and (exc := task.exception()) is not None:
                raise exc
        if self._wake.is_set():
            await asyncio.sleep(self._debounce)  # gather a burst of writes into one push
        self._wake.clear()
        self._online.clear()

    async def _sleep(self, delay: float) -> None:
        self._online.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._online.wait(), delay)
        self._online.clear()


def _log_refresh_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.info("could not refresh the live session's token (%s); the loop reconnects", exc)
