"""``SyncClient``: a durable offline outbox, optimistic reads and sync, for one replica.

Usage::

    async with SyncClient("https://sync.example.com", token, "phone-7f3a", "sync.db") as client:
        deliveries = client.collection("deliveries")
        deliveries.set("dlv-123", status="delivered")   # on disk when it returns
        deliveries.inc("dlv-123", "cod_cents", 12500)
        await client.sync()                              # or client.start() to sync in the background

Threading: use a client from its event loop's thread. Writes may also come
from other threads (they are serialised), but never ``await`` inside ``batch()``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

import msgspec

from syncclient.attachment_status import StatusRefresh
from syncclient.background import BackgroundSync
from syncclient.backoff import Backoff
from syncclient.collection import CollectionHandle
from syncclient.events import AttachmentStatusChanged, Event, EventBus, Handler, RejectedChange
from syncclient.localstore import LocalStore
from syncclient.roundtrip import RoundTrip, SyncStats
from syncclient.state import optimistic_view
from syncclient.transport.http import HttpTransport
from syncclient.transport.interface import LiveParams, LiveTransport, LiveTransportFactory, Transport
from syncclient.transport.ws import connect_websocket
from syncclient.unavailable import UnavailableEntities
from syncproto.attachments import AttachmentStatus
from syncproto.hlc import HybridClock, now_ms
from syncproto.messages import Change, EntityView, Op, Unavailable, change_decoder, json_encoder
from syncproto.schema import Schema

__all__ = ["MAX_CHANGE_BYTES", "SyncClient"]

MAX_CHANGE_BYTES = 1 << 20
"""Largest encoded change we queue: it must fit a push body (server default 4 MiB) with room to spare."""

OpsFor = list[Op] | Callable[[EntityView | None], list[Op]]


class SyncClient:
    """One replica: ``url`` and ``token`` reach the server, ``path`` is the local SQLite file.

    ``transport`` replaces HTTP (for example a ``MockTransport``); ``schema``
    gives reads the server's field kinds and register rules (default: LWW
    registers, kinds taken from the ops); ``live_transports`` are tried by
    ``start()`` before plain HTTP (default: the WebSocket channel when ``transport``
    is not given; pass ``()`` for HTTP only); ``sync_interval`` is how often ``start()``
    polls when no live transport announces changes; ``backoff`` sets its retry delays;
    ``status_refresh_first`` is the first delay (doubling to 60 s) between refreshes of
    pending attachment statuses while ``start()`` runs.
    """

    def __init__(
        self,
        url: str | None,
        token: str | None,
        replica_id: str,
        path: str | Path,
        *,
        transport: Transport | None = None,
        schema: Schema | None = None,
        live_transports: Sequence[LiveTransportFactory] | None = None,
        sync_interval: float = 30.0,
        batch_size: int = 500,
        pull_limit: int = 1000,
        backoff: Backoff | None = None,
        wall_clock: Callable[[], int] = now_ms,
        status_refresh_first: float = 2.0,
    ) -> None:
        if transport is None and (url is None or token is None):
            raise ValueError("give url and token, or a transport")
        if not 1 <= batch_size <= 500:
            raise ValueError("batch_size must be 1..500 (PROTOCOL §4.1: at most 500 changes per push)")
        self.url = url
        self.token = token
        self.replica_id = replica_id
        self.schema = schema
        self.store = LocalStore(path, replica_id)
        self.clock = HybridClock(wall_clock, last=self.store.hlc())
        self.events = EventBus()
        self.transport: Transport = transport or HttpTransport(url or "", self._current_token)
        if live_transports is None:
            # The WebSocket channel by default, unless the app brought its own transport (a mock).
            live_transports = (connect_websocket,) if transport is None else ()
        self._live = list(live_transports)
        self._interval = sync_interval
        self._backoff = backoff
        self._unavailable = UnavailableEntities(
            self.store, self.transport, self.events.emit, self.clock.observe, clock=lambda: wall_clock() / 1000
        )
        self._roundtrip = RoundTrip(
            self.store,
            self.events.emit,
            self.clock.observe,
            batch_size=batch_size,
            pull_limit=pull_limit,
            unavailable=self._unavailable,
        )
        self._sync_lock: asyncio.Lock | None = None
        self._background: BackgroundSync | None = None
        self._statuses = StatusRefresh(self.store, self.transport, self._emit, first=status_refresh_first)

    def _current_token(self) -> str:
        return self.token or ""

    # --- lifecycle --------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop background sync, close the transport and the local file. Queued changes stay on disk."""
        await self.stop()
        await self.transport.aclose()
        self.store.close()

    def set_token(self, token: str) -> None:
        """Use a fresh token from now on: hand it to the open live session, and retry at once if the loop waited."""
        self.token = token
        if self._background is not None:
            self._background.refresh_token(token)
            self._background.notify_online()

    # --- writes -----------------------------------------------------------------

    def collection(self, name: str) -> CollectionHandle:
        return CollectionHandle(self, name)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Commit several writes as one transaction (one fsync): all are durable at the end, or none."""
        with self.store.transaction():
            yield

    def _write(self, collection: str, entity: str, ops: OpsFor) -> Change:
        with self.store.transaction():
            stored = self.store.view(collection, entity)
            if callable(ops):
                ops = ops(self._view(collection, entity))
            # Context is the vv of the last *pulled* state (PROTOCOL §2): pending
            # changes of our own are implied by the counter.
            context = dict(stored.vv) if stored is not None else {}
            hlc = self.clock.tick()
            change_id = str(uuid.uuid4())
            probe = _validated(Change(change_id, 1, collection, entity, hlc, context, ops))
            change = self.store.enqueue(lambda n: msgspec.structs.replace(probe, n=n))
        if self._background is not None:
            self._background.wake()
        return change

    # --- reads ------------------------------------------------------------------

    def _view(self, collection: str, entity: str) -> EntityView | None:
        stored = self.store.view(collection, entity)
        rows = self.store.outbox(collection, entity).get(entity, [])
        schema = self.schema.get(collection) if self.schema is not None else None
        return optimistic_view(stored, (r.change for r in rows), self.replica_id, schema)

    def _views(self, collection: str) -> dict[str, EntityView]:
        stored = self.store.views(collection)
        outbox = self.store.outbox(collection)
        schema = self.schema.get(collection) if self.schema is not None else None
        out: dict[str, EntityView] = {}
        for entity in stored.keys() | outbox.keys():
            rows = outbox.get(entity, [])
            view = optimistic_view(stored.get(entity), (r.change for r in rows), self.replica_id, schema)
            if view is not None:
                out[entity] = view
        return out

    def pending_count(self) -> int:
        """Changes not yet acknowledged by the server."""
        return self.store.pending_count()

    def rejections(self) -> list[RejectedChange]:
        """Changes the server rejected, kept until ``clear_rejections`` (events can be missed; this cannot)."""
        return self.store.rejections()

    def clear_rejections(self, ids: Sequence[str] | None = None) -> None:
        self.store.clear_rejections(ids)

    def unavailable(self) -> list[Unavailable]:
        """Entities a pull named ``unavailable`` (the server could not read their stored state), not read back yet.

        Each keeps what this replica holds of it meanwhile; sync rounds read them again
        (``EntityUnavailable`` when first named, ``RemoteChange`` when back; PROTOCOL §4.4).
        """
        return self._unavailable.list()

    def attachment_status(self, attachment_id: str) -> AttachmentStatus | None:
        """``pending``, ``available`` or ``refused`` as last heard from the server; ``None`` if never heard.

        Heard with pulls, and refreshed after each sync round and with backoff while some are pending
        (``AttachmentStatusChanged`` events, ``on_attachment_status``). A reference written locally
        and not yet pulled back has no status yet.
        """
        return self.store.attachment_status(attachment_id)

    async def refresh_attachment_statuses(self) -> list[AttachmentStatusChanged]:
        """Ask the server now about every pending attachment; the changes (also emitted as events)."""
        events = await self._statuses.refresh()
        return [e for e in events if isinstance(e, AttachmentStatusChanged)]

    # --- events -----------------------------------------------------------------

    def subscribe(self, handler: Handler, *types: type) -> Callable[[], None]:
        """Call ``handler`` with every ``Event`` (or those of ``types``); returns an unsubscribe function."""
        return self.events.subscribe(handler, *types)

    def on_attachment_status(self, callback: Callable[[str, AttachmentStatus], object]) -> Callable[[], None]:
        """Call ``callback(id, status)`` whenever an attachment's status changes; returns an unsubscribe function."""

        def handler(event: Event) -> None:
            if isinstance(event, AttachmentStatusChanged):
                callback(event.id, event.status)

        return self.events.subscribe(handler, AttachmentStatusChanged)

    def _emit(self, event: Event) -> None:
        self.events.emit(event)

    # --- sync -------------------------------------------------------------------

    async def sync(self) -> SyncStats:
        """Push the whole outbox in batches, then pull until ``more`` is false.

        Raises ``TransportError`` or ``ServerError`` if the server cannot be
        reached or refuses; nothing is lost, call again later.
        """
        return await self._sync_via(self.transport)

    async def _sync_via(self, transport: Transport) -> SyncStats:
        if self._sync_lock is None:
            self._sync_lock = asyncio.Lock()
        async with self._sync_lock:  # one round trip at a time: the outbox is read in counter order
            stats = await self._roundtrip.run(transport)
        await self._statuses.after_sync()  # a status is not a change: ask about what is still pending
        return stats

    def start(self) -> None:
        """Sync in the background (call from a running event loop) until ``stop()``."""
        if self._background is None:

            def connector(factory: LiveTransportFactory) -> Callable[[], Awaitable[LiveTransport]]:
                # Read at connect time: the token may be refreshed and the cursor moves.
                return lambda: factory(
                    LiveParams(self.url or "", self._current_token(), self.replica_id, self.store.cursor())
                )

            self._background = BackgroundSync(
                self._sync_via,
                self.transport,
                self._emit,
                live=[connector(f) for f in self._live],
                interval=self._interval,
                backoff=self._backoff,
            )
        self._background.start()
        self._statuses.start()

    async def stop(self) -> None:
        await self._statuses.stop()
        if self._background is not None:
            await self._background.stop()
            self._background = None

    def notify_online(self) -> None:
        """Tell the background loop the network is back (for example from an OS callback)."""
        if self._background is not None:
            self._background.notify_online()


def _validated(change: Change) -> Change:
    """The change as the server will decode it, or ValueError now rather than a refused push later.

    A change that fails the server's request validation would fail its whole
    push (``invalid_request``) and block the outbox, so it must never be queued.
    """
    try:
        blob = json_encoder.encode(change)
        wire = change_decoder.decode(blob)
    except (msgspec.ValidationError, msgspec.EncodeError, TypeError) as exc:
        raise ValueError(f"invalid change for {change.collection}/{change.entity}: {exc}") from exc
    if len(blob) > MAX_CHANGE_BYTES:
        raise ValueError(f"a change may take at most {MAX_CHANGE_BYTES} bytes; this one takes {len(blob)}")
    return wire
