"""Learning when a pending attachment becomes available or refused (PROTOCOL §10.2, ADR 0024).

A status is not a change in the log: an upload that finishes changes no entity,
so later pulls do not bring it. ``StatusRefresh`` asks the server for the ids
the local store last heard as ``pending`` (``POST /v1/attachments/status``, at
most ``MAX_STATUS_IDS`` per request), stores what it hears and emits an
``AttachmentStatusChanged`` for each change.

Usage (``SyncClient`` wires it; an app only sees the events)::

    refresh = StatusRefresh(store, transport, emit)
    await refresh.refresh()        # once, now (after a sync round that left some pending)
    refresh.start()                # and then with backoff (2 s doubling to 60 s) while some stay pending
    refresh.kick()                 # a sync round ended: back to 2 s

Pitfalls:

* An id the server leaves out of its answer is one this token may no longer see
  (the entity moved out of its channels, the reference was overwritten): it is
  forgotten, so it is not asked about forever.
* A transport that is not a ``StatusTransport`` (a ``MockTransport``) never
  refreshes; statuses then only come with pulls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from syncclient.backoff import Backoff
from syncclient.errors import ServerError, SyncError
from syncclient.events import Event
from syncclient.localstore import LocalStore
from syncclient.transport.interface import StatusTransport, Transport
from syncproto.attachments import MAX_STATUS_IDS

__all__ = ["StatusRefresh"]

log = logging.getLogger("syncclient")


class StatusRefresh:
    """Refreshes pending attachment statuses of one client (see the module docs)."""

    def __init__(
        self,
        store: LocalStore,
        transport: Transport,
        emit: Callable[[Event], None],
        *,
        first: float = 2.0,
        cap: float = 60.0,
    ) -> None:
        self.store = store
        self.transport = transport
        self.emit = emit
        self._backoff = Backoff(base=first, cap=cap)  # 2, 4, ... 60 s, each with jitter (down to half)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def supported(self) -> bool:
        return isinstance(self.transport, StatusTransport)

    async def refresh(self) -> list[Event]:
        """Ask once about every pending id; store the answers and emit their events (also returned).

        Raises ``TransportError``/``ServerError`` like a sync; what was learnt before the error is kept.
        """
        pending = self.store.pending_attachments()
        if not pending or not isinstance(self.transport, StatusTransport):
            return []
        events: list[Event] = []
        for start in range(0, len(pending), MAX_STATUS_IDS):
            asked = pending[start : start + MAX_STATUS_IDS]
            heard = await self.transport.attachment_status(asked)
            events += self.store.set_attachment_statuses(heard)
            self.store.forget_attachments([i for i in asked if i not in heard])
        for event in events:
            self.emit(event)
        return events

    async def after_sync(self) -> None:
        """A sync round ended: refresh now if something is pending, and restart the backoff at its first step."""
        self.kick()
        if not self.store.pending_attachments():
            return
        try:
            await self.refresh()
        except SyncError as exc:
            log.info("attachment status refresh failed (%s); the background refresh retries", exc)

    def kick(self) -> None:
        self._backoff.reset()
        if self._wake is not None:
            self._wake.set()

    def start(self) -> None:
        """Refresh in the background (call from a running event loop) until ``stop()``."""
        if self._task is None and self.supported:
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self._wake = None

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            if not self.store.pending_attachments():
                await self._wake.wait()  # until a sync round (which may bring pending references)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._backoff.next())
                continue  # kicked: a sync round just refreshed and reset the delay
            try:
                await self.refresh()
            except ServerError as exc:
                if exc.retry_after is not None:
                    await asyncio.sleep(exc.retry_after)
            except SyncError as exc:
                log.debug("attachment status refresh failed: %s", exc)
