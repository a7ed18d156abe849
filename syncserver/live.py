"""Live delivery for the WebSocket channel: shared per-tenant feeds, bounded per-connection queues.

How a commit reaches a subscriber:

1. ``PushService`` commits and calls ``Fanout.publish(tenant, seq)``; every
   process's ``LiveHub.changed`` hears it (this one directly, others via Redis).
2. The tenant's ``Feed`` reads the new entities from the log once (``Store.pull``
   after the last seq it read) and keeps the page in a small cache.
3. Each live ``Connection`` of the tenant is offered the page as one frame, built
   with ``PullService.view`` for the connection's cursor: exactly what an HTTP
   pull with that cursor returned at that moment. A frame is encoded once per
   (cursor, encoding) and shared by every connection at that cursor.
4. Offering never waits. A connection whose queue is full drops its queued
   change frames, is marked lagging and, once its socket has drained, catches up
   from the log from the last frame the socket took: nothing is lost.

A connection that is not live (just connected, or lagging) catches up with
``PullService.pull`` (the HTTP pull itself) and goes live when it reaches what
the feed has read.

Restricted principals (drivers, who see only their channels) never take shared
pages: a filter over a tenant-wide page can neither send evictions nor know
which entities entered the scope and must be sent whole. For them a new page
only wakes their own ``PullService.pull`` from their cursor, which does both.
The optional ``ScopeFilter`` is a further, per-entity filter on top of that.

Memory per session is returned when it ends: the hub counts unauthenticated
connections per client address (``admit_unauthenticated``), and once as many
sessions have ended as are open (at least ``COLLECT_AFTER_SESSIONS``) it runs
the full garbage collection that the server process otherwise runs rarely
(``server_gc_policy``; docs/adr/0019).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import ClassVar

import msgspec
from prometheus_client import Counter as MetricCounter
from prometheus_client import Gauge

from syncproto import errors
from syncproto.messages import (
    EntityView,
    PullRequest,
    WsChanges,
    WsEncoding,
    WsPing,
    WsReset,
    WsServerMessage,
    WsSynced,
    msgpack_encoder,
)
from syncserver.auth.scopes import Scope
from syncserver.auth.tokens import Principal
from syncserver.fanout.base import Fanout
from syncserver.keys.keyring import TenantCipher
from syncserver.ops import metrics
from syncserver.settings import LiveSettings
from syncserver.sync import cursor
from syncserver.sync.pull import PullService
from syncstore import TRANSIENT_ERRORS
from syncstore.base import Store
from syncstore.records import EntityRecord

log = logging.getLogger("syncserver.live")

ScopeFilter = Callable[[Principal, EntityView], bool]
"""May this principal see this entity? ``None`` in its place means the whole tenant."""

Data = str | bytes
_json = msgspec.json.Encoder()

OVERFLOWS = MetricCounter(
    "sync_websocket_overflows", "Send queues that overflowed: change frames dropped, resumed from the log."
)
QUEUE_HIGH_WATER = Gauge(
    "sync_websocket_queue_frames_high_water", "The longest send queue (frames) of any connection so far."
)
_high_water = 0

SERVER_GC_THRESHOLDS = (700, 10, 1000)
"""The server process's collector thresholds: full collections 100 times less often than Python's default."""
COLLECT_AFTER_SESSIONS = 1000
"""Ended sessions (or more, while more are open) between the full collections ``LiveHub.ended`` runs."""

# Close codes used by the hub; the transport owns the full table (PROTOCOL.md).
CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL = 1011
CLOSE_UNAVAILABLE = 1013
CLOSE_UNAUTHORIZED = 4401
CLOSE_TIMEOUT = 4408


def encode(message: WsServerMessage, encoding: WsEncoding) -> Data:
    """JSON text or MessagePack binary, as the connection negotiated."""
    if encoding == "msgpack":
        return msgpack_encoder.encode(message)
    return _json.encode(message).decode()


def server_gc_policy() -> None:
    """The server process's garbage-collector policy (docs/adr/0011 and 0019); in-process apps keep Python's.

    A full collection walks every live object: with a thousand sessions it froze
    the process for 50-180 ms and made the whole p99 of fan-out. So objects alive
    after start-up are frozen out of every scan and full collections are rare.
    What a rare full collection leaves behind, sessions that ended in reference
    cycles, ``LiveHub.ended`` collects.
    """
    gc.freeze()
    gc.set_threshold(*SERVER_GC_THRESHOLDS)


class TooManyConnections(Exception):
    pass


class Frame:
    """One outgoing message. ``seq`` is set on change frames: the seq their cursor points at.
    ``stamp_ms`` on live frames: when the newest of their changes was pushed (for the lag metric)."""

    __slots__ = ("data", "seq", "size", "stamp_ms")

    def __init__(self, data: Data, seq: int | None = None, stamp_ms: int | None = None) -> None:
        self.data = data
        self.seq = seq
        self.size = len(data)
        self.stamp_ms = stamp_ms


class Connection:
    """One subscriber: its place in the log and its bounded send queue.

    ``position``: changes up to this seq are queued or sent. ``handed``: up to this
    seq the writer has taken them for the socket. An overflow rewinds ``position``
    to ``handed``, so a dropped frame is read again from the log, never lost.

    The transport plugs in ``start_writer`` (called when frames wait and no writer
    runs; the writer calls ``pop``/``sent`` until ``pop`` returns None) and
    ``on_close``. An idle connection holds no task of its own besides the reader.
    """

    __slots__ = (
        "_bytes",
        "_changes",
        "_collection_set",
        "_progress",
        "_queue",
        "_sending",
        "_writing",
        "catchup",
        "close_code",
        "close_reason",
        "collections",
        "encoding",
        "expires_at",
        "handed",
        "has_cursor",
        "lagging",
        "last_ping",
        "last_seen",
        "live",
        "max_queue_len",
        "on_close",
        "on_overflow",
        "position",
        "principal",
        "sample",
        "scope",
        "settings",
        "shared",
        "start_writer",
        "tenant",
    )

    _count: ClassVar[int] = 0

    def __init__(
        self,
        principal: Principal,
        settings: LiveSettings,
        *,
        encoding: WsEncoding = "json",
        position: int = 0,
        has_cursor: bool = False,
        collections: list[str] | None = None,
        scope: ScopeFilter | None = None,
    ) -> None:
        self.principal = principal
        self.tenant = principal.tenant
        self.settings = settings
        self.encoding: WsEncoding = encoding
        self.position = position
        self.handed = position
        self.has_cursor = has_cursor
        self.collections = collections
        self._collection_set = frozenset(collections) if collections is not None else None
        self.scope = scope
        self.shared = Scope.of(principal).unrestricted
        """Whether tenant-wide feed pages may be sent as they are (see the module docs)."""
        self.live = False
        self.lagging = False
        self.max_queue_len = 0
        self.last_seen = self.last_ping = time.monotonic()
        self.expires_at: float | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.on_close: Callable[[], None] | None = None
        self.on_overflow: Callable[[], None] | None = None
        self.start_writer: Callable[[], None] | None = None
        self.catchup: asyncio.Task[None] | None = None
        Connection._count += 1
        self.sample = Connection._count % 16 == 0
        """One connection in 16 feeds the lag histogram (observing every send costs more than it tells)."""
        self._queue: list[Frame] = []  # at most ``queue_frames``: pop(0) is cheap, and an empty list is small
        self._bytes = 0
        self._changes = 0
        self._sending = False
        self._writing = False
        self._progress: asyncio.Future[None] | None = None

    # --- what the connection may see --------------------------------------

    @property
    def filtered(self) -> bool:
        return self._collection_set is not None or self.scope is not None

    def wants(self, view: EntityView) -> bool:
        if self._collection_set is not None and view.collection not in self._collection_set:
            return False
        return self.scope is None or self.scope(self.principal, view)

    def cursor(self) -> str | None:
        return cursor.encode(self.tenant, self.position) if self.position or self.has_cursor else None

    # --- the send queue ---------------------------------------------------

    def __len__(self) -> int:
        return len(self._queue)

    def full(self, size: int = 0) -> bool:
        """Whether one more frame of ``size`` bytes would pass a bound (an empty queue takes any one frame)."""
        return bool(self._queue) and (
            len(self._queue) >= self.settings.queue_frames or self._bytes + size > self.settings.queue_bytes
        )

    def control(self, message: WsServerMessage, *, droppable: bool = False) -> None:
        """Queue a message that is not part of the change stream (welcome, results, errors, heartbeats).

        It goes first: if the queue is full its change frames are dropped (they can be read again
        from the log). A ``droppable`` one (a heartbeat) is skipped if the queue is still full.
        """
        if self.close_code is not None:
            return
        frame = Frame(encode(message, self.encoding))
        if self.full(frame.size) and self._changes:
            self._overflow()
        if droppable and self.full(frame.size):
            return
        self._append(frame)

    def offer(self, frame: Frame) -> bool:
        """Queue a live change frame without waiting; on overflow drop change frames and return False."""
        if self.full(frame.size):
            self._overflow()
            return False
        self._append(frame)
        return True

    async def put(self, frame: Frame) -> None:
        """Queue a catch-up frame, waiting until at most one change frame is queued (flow control)."""
        await self.wait_room()
        self._append(frame)

    async def wait_room(self) -> None:
        while self._changes > 1:
            await self._wait_progress()

    async def wait_not_full(self) -> None:
        while self.full() and self.close_code is None:
            await self._wait_progress()

    async def wait_drained(self) -> None:
        """Until the socket has taken and sent everything queued."""
        while self._queue or self._sending:
            await self._wait_progress()

    def kick(self) -> None:
        """Start the writer if frames wait and none runs."""
        if self._queue and not self._writing and self.start_writer is not None:
            self._writing = True
            self.start_writer()

    def pop(self) -> Frame | None:
        """The writer's side: the next frame to send (call ``sent`` after it), or None: the writer stops."""
        if not self._queue or self.close_code is not None:
            self._writing = False
            return None
        frame = self._queue.pop(0)
        self._bytes -= frame.size
        if frame.seq is not None:
            self._changes -= 1
            self.handed = frame.seq
        self._sending = True
        self._progressed()
        return frame

    def sent(self) -> None:
        self._sending = False
        self._progressed()

    def _wait_progress(self) -> asyncio.Future[None]:
        if self._progress is None:
            self._progress = asyncio.get_running_loop().create_future()
        return self._progress

    def _progressed(self) -> None:
        if self._progress is not None:
            if not self._progress.done():
                self._progress.set_result(None)
            self._progress = None

    def _append(self, frame: Frame) -> None:
        self._queue.append(frame)
        self._bytes += frame.size
        if frame.seq is not None:
            self._changes += 1
            self.position = frame.seq
        if len(self._queue) > self.max_queue_len:
            self.max_queue_len = len(self._queue)
            global _high_water
            if self.max_queue_len > _high_water:
                _high_water = self.max_queue_len
                QUEUE_HIGH_WATER.set(_high_water)
        self.kick()

    def _overflow(self) -> None:
        self._queue = [f for f in self._queue if f.seq is None]
        self._bytes = sum(f.size for f in self._queue)
        self._changes = 0
        self._progressed()
        self.position = self.handed
        self.live = False
        self.lagging = True
        OVERFLOWS.inc()
        if self.on_overflow is not None:
            self.on_overflow()

    # --- closing ----------------------------------------------------------

    def request_close(self, code: int, reason: str) -> None:
        """Ask the transport to close the socket with ``code``; the reason is a stable error code."""
        if self.close_code is not None:
            return
        self.close_code, self.close_reason = code, reason
        self._progressed()  # nobody waits for room on a closing connection
        if self.on_close is not None:
            self.on_close()


class Page:
    """Entities the feed read in one go: every entity whose latest seq is in ``(after, upto]``."""

    __slots__ = ("_frames", "_views", "after", "cipher", "more", "rows", "stamp_ms", "upto")

    def __init__(self, after: int, rows: list[EntityRecord], more: bool, cipher: TenantCipher) -> None:
        self.after = after
        self.upto = rows[-1].seq
        self.rows = rows
        self.more = more
        self.cipher = cipher
        self.stamp_ms = max(row.updated_at for row in rows)
        self._views: dict[int, list[EntityView]] = {}
        self._frames: dict[tuple[int, str], Frame] = {}

    def forget(self) -> None:
        """Drop the decoded views and encoded frames; they are rebuilt from the rows if asked for again."""
        self._views.clear()
        self._frames.clear()

    def views(self, pull: PullService, after: int) -> list[EntityView]:
        """The entities changed after ``after``, with only their fields changed after it (cached)."""
        views = self._views.get(after)
        if views is None:
            views = [pull.view(self.cipher, row, after) for row in self.rows if row.seq > after]
            self._views[after] = views
        return views

    def frame(self, pull: PullService, conn: Connection) -> Frame | None:
        """This page for ``conn`` (from its position), or None when its filters leave nothing."""
        after = conn.position
        views = self.views(pull, after)
        next_cursor = cursor.encode(conn.tenant, self.upto)
        if conn.filtered:
            mine = [v for v in views if conn.wants(v)]
            if not mine:
                return None
            return Frame(encode(WsChanges(mine, next_cursor, self.more), conn.encoding), self.upto, self.stamp_ms)
        key = (after, conn.encoding)
        shared = self._frames.get(key)
        if shared is None:  # one frame object for every connection at this cursor: frames are never mutated
            data = encode(WsChanges(views, next_cursor, self.more), conn.encoding)
            shared = self._frames[key] = Frame(data, self.upto, self.stamp_ms)
        return shared


class Feed:
    """One tenant's live changes in this process: reads each new page once, offers it to every live connection."""

    def __init__(self, hub: LiveHub, tenant: str) -> None:
        self.hub = hub
        self.tenant = tenant
        self.connections: set[Connection] = set()
        self.pages: deque[Page] = deque()
        self.cached_rows = 0
        self.read_upto: int | None = None
        self.head = 0
        self.ready = asyncio.Event()
        self._refresh = True
        self._task: asyncio.Task[None] | None = None
        self._retry: asyncio.TimerHandle | None = None

    def changed(self, seq: int) -> None:
        if seq > self.head:
            self.head = seq
            self.kick()

    def resync(self) -> None:
        self._refresh = True
        self.kick()

    def kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"live-feed-{self.tenant}")

    def covering(self, position: int) -> Page | None:
        for page in reversed(self.pages):
            if page.after <= position < page.upto:
                return page
        return None

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        try:
            while self._refresh or self.read_upto is None or self.read_upto < self.head:
                if self._refresh or self.read_upto is None:
                    await self._read_head()
                elif not await self._read_page(self.read_upto):
                    break  # a notice ahead of what this database shows; the next one retries
        except Exception:
            log.exception("live feed of tenant %s failed; retrying in 1 s", self.tenant)
            self._refresh = True
            self._retry = asyncio.get_running_loop().call_later(1.0, self.kick)

    async def _read_head(self) -> None:
        self._refresh = False
        record = await self.hub.store.get_tenant(self.tenant)
        last = record.last_seq if record is not None else 0
        if self.read_upto is None:
            self.read_upto = last
            self.ready.set()
        self.head = max(self.head, last)

    async def _read_page(self, after: int) -> bool:
        limit = self.hub.settings.page_limit
        rows = await self.hub.store.pull(self.tenant, after, limit + 1)
        if not rows:
            return False
        cipher = await self.hub.pull.ciphers.cipher(self.tenant)
        page = Page(after, rows[:limit], len(rows) > limit, cipher)
        for older in self.pages:  # live connections have what they need; laggards rebuild on demand
            older.forget()
        self.pages.append(page)
        self.cached_rows += len(page.rows)
        while self.cached_rows > self.hub.settings.cache_rows and len(self.pages) > 1:
            self.cached_rows -= len(self.pages.popleft().rows)
        self.read_upto = page.upto
        self.head = max(self.head, page.upto)
        for conn in list(self.connections):
            if not conn.live:
                continue
            if conn.shared:
                self.offer(conn, page)
            elif conn.position < page.upto:
                self.hub.catch_up(conn)  # its own scoped pull (evictions, entities entering its scope)
        return True

    def offer(self, conn: Connection, page: Page) -> None:
        if conn.position >= page.upto:
            return
        if conn.position < page.after:
            self.hub.catch_up(conn)
            return
        frame = page.frame(self.hub.pull, conn)
        if frame is None:
            conn.position = page.upto
        elif not conn.offer(frame):  # overflowed: ``on_overflow`` started its catch-up
            log.info("live connection of %s/%s lags; it will resume from the log", conn.tenant, conn.principal.sub)


class LiveHub:
    """This process's WebSocket subscribers, by tenant. Listens to the fan-out (a ``FanoutListener``)."""

    def __init__(
        self, store: Store, pull: PullService, settings: LiveSettings, scope: ScopeFilter | None = None
    ) -> None:
        self.store = store
        self.pull = pull
        self.settings = settings
        self.scope = scope
        self.feeds: dict[str, Feed] = {}
        self.total = 0
        self._per_user: Counter[tuple[str, str]] = Counter()
        self._unauthenticated: Counter[str] = Counter()
        self._ended = 0
        self._collecting = False
        self._sweeper: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    async def start(self, fanout: Fanout) -> None:
        self._unsubscribe = fanout.subscribe(self)
        self._sweeper = asyncio.create_task(self._sweep(), name="live-sweeper")

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        tasks: list[asyncio.Task[None]] = [self._sweeper] if self._sweeper is not None else []
        for feed in list(self.feeds.values()):
            for conn in list(feed.connections):
                conn.request_close(CLOSE_GOING_AWAY, errors.GOING_AWAY)
                if conn.catchup is not None:
                    tasks.append(conn.catchup)
            await feed.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- admission --------------------------------------------------------

    def admit(self, principal: Principal) -> None:
        """Count a new connection, or raise ``TooManyConnections``."""
        key = (principal.tenant, principal.sub)
        if self.total >= self.settings.max_connections:
            raise TooManyConnections(f"the server holds its maximum of {self.settings.max_connections} connections")
        if self._per_user[key] >= self.settings.max_connections_per_user:
            raise TooManyConnections(
                f"this user already holds {self.settings.max_connections_per_user} connections; close one first"
            )
        self._per_user[key] += 1
        self.total += 1
        metrics.WS_CONNECTIONS.inc()

    def release(self, principal: Principal) -> None:
        key = (principal.tenant, principal.sub)
        self._per_user[key] -= 1
        if self._per_user[key] <= 0:
            del self._per_user[key]
        self.total -= 1
        metrics.WS_CONNECTIONS.dec()

    def admit_unauthenticated(self, address: str) -> None:
        """Count a connection from ``address`` that has not authenticated yet, or raise ``TooManyConnections``.

        Call ``release_unauthenticated`` once it has authenticated or ended. An
        address with none left is forgotten, so many addresses cost nothing after.
        """
        limit = self.settings.max_unauthenticated_per_address
        if self._unauthenticated[address] >= limit:  # reading a Counter adds no key
            metrics.WS_UNAUTHENTICATED_REFUSED.inc()
            raise TooManyConnections(
                f"this address already has {limit} connections that have not authenticated; authenticate first"
            )
        self._unauthenticated[address] += 1
        metrics.WS_UNAUTHENTICATED.inc()

    def release_unauthenticated(self, address: str) -> None:
        self._unauthenticated[address] -= 1
        if self._unauthenticated[address] <= 0:
            del self._unauthenticated[address]
        metrics.WS_UNAUTHENTICATED.dec()

    def ended(self) -> None:
        """A session ended, authenticated or not: every so many, collect the reference cycles they leave.

        uvicorn's and Litestar's objects of a connection (the protocol and its
        parser, the send and receive wrappers, the ``WebSocket``) refer to each
        other, so only a full collection frees them: about 19 KiB a session.
        Under ``server_gc_policy`` full collections are rare, and without this a
        stream of short sessions (unauthenticated ones included) grew the
        process for good. The pause of a full collection grows with the open
        sessions, so it waits for as many ended sessions as are open (at least
        ``COLLECT_AFTER_SESSIONS``): its cost per ended session stays constant,
        and the garbage waiting stays below what the open sessions hold.
        """
        self._ended += 1
        if self._collecting or self._ended < max(COLLECT_AFTER_SESSIONS, self.total):
            return
        self._collecting = True
        asyncio.get_running_loop().call_soon(self._collect)  # on the next turn, not inside a session's teardown

    def _collect(self) -> None:
        started = time.perf_counter()
        found = gc.collect()
        log.debug(
            "collected %d objects left by %d ended sessions in %.1f ms",
            found,
            self._ended,
            (time.perf_counter() - started) * 1000,
        )
        self._ended = 0
        self._collecting = False

    def attach(self, conn: Connection) -> None:
        feed = self.feeds.get(conn.tenant)
        if feed is None:
            feed = self.feeds[conn.tenant] = Feed(self, conn.tenant)
            feed.kick()
        feed.connections.add(conn)
        conn.on_overflow = lambda: self.catch_up(conn)
        self.catch_up(conn)

    async def detach(self, conn: Connection) -> None:
        if conn.catchup is not None:
            conn.catchup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await conn.catchup
        conn.on_overflow = None  # it refers to the connection: a cycle only a full collection would free
        feed = self.feeds.get(conn.tenant)
        if feed is None:
            return
        feed.connections.discard(conn)
        if not feed.connections:
            del self.feeds[conn.tenant]
            await feed.close()

    # --- FanoutListener ---------------------------------------------------

    def changed(self, tenant: str, seq: int) -> None:
        feed = self.feeds.get(tenant)
        if feed is not None:
            feed.changed(seq)

    def resync(self) -> None:
        for feed in self.feeds.values():
            feed.resync()

    # --- catch-up ---------------------------------------------------------

    def catch_up(self, conn: Connection) -> None:
        conn.live = False
        if conn.catchup is None or conn.catchup.done():
            conn.catchup = asyncio.create_task(self._catch_up(conn), name="live-catch-up")

    async def _catch_up(self, conn: Connection) -> None:
        feed = self.feeds.get(conn.tenant)
        if feed is None or conn not in feed.connections:
            return  # detached meanwhile
        try:
            if conn.lagging:
                await conn.wait_drained()
            while True:
                await conn.wait_room()
                await feed.ready.wait()
                assert feed.read_upto is not None
                if conn.position >= feed.read_upto:
                    conn.live, conn.lagging = True, False
                    conn.control(WsSynced(conn.cursor()))
                    return
                page = feed.covering(conn.position) if conn.shared else None
                if page is None:
                    await self._read_log(conn)
                    continue
                frame = page.frame(self.pull, conn)
                if frame is None:
                    conn.position = page.upto
                else:
                    await conn.put(frame)
        except asyncio.CancelledError:
            raise
        except TRANSIENT_ERRORS as exc:
            log.warning("catch-up stopped, the database is unavailable: %s", exc)
            conn.request_close(CLOSE_UNAVAILABLE, errors.UNAVAILABLE)
        except Exception:
            log.exception("catch-up failed for a connection of tenant %s", conn.tenant)
            conn.request_close(CLOSE_INTERNAL, errors.INTERNAL)
        finally:
            if conn.catchup is asyncio.current_task():
                conn.catchup = None  # a finished task is dead weight on an idle connection

    async def _read_log(self, conn: Connection) -> None:
        """One page of catch-up: an HTTP pull from the connection's cursor, filtered by its scope."""
        record = await self.store.get_tenant(conn.tenant)
        head = record.last_seq if record is not None else 0
        request = PullRequest(cursor=conn.cursor(), limit=self.settings.page_limit, collections=conn.collections)
        response = await self.pull.pull(conn.principal, request)
        if response.reset:
            conn.control(WsReset())
            conn.position = conn.handed = 0
            conn.has_cursor = False
            return
        last = cursor.decode(conn.tenant, response.cursor)
        # Without more pages the pull has seen every commit up to ``head``, matching or not.
        position = last if response.more else max(last, head)
        conn.has_cursor = True
        views = [v for v in response.changes if conn.scope is None or conn.scope(conn.principal, v)]
        if not views and not response.evictions:
            conn.position = position
            return
        message = WsChanges(views, cursor.encode(conn.tenant, position), response.more, response.evictions)
        await conn.put(Frame(encode(message, conn.encoding), position))

    # --- heartbeats, token expiry, periodic resync -------------------------

    def connections(self) -> list[Connection]:
        return [conn for feed in self.feeds.values() for conn in feed.connections]

    async def _sweep(self) -> None:
        heartbeat = self.settings.heartbeat_ms / 1000
        idle = self.settings.idle_timeout_ms / 1000
        resync = self.settings.resync_ms / 1000
        period = max(0.01, min(heartbeat / 4, idle / 4, resync))
        next_resync = time.monotonic() + resync
        while True:
            await asyncio.sleep(period)
            now, wall = time.monotonic(), time.time()
            for conn in self.connections():
                if now - conn.last_seen > idle:
                    conn.request_close(CLOSE_TIMEOUT, errors.TIMEOUT)
                elif conn.expires_at is not None and wall > conn.expires_at:
                    conn.request_close(CLOSE_UNAUTHORIZED, errors.TOKEN_EXPIRED)
                elif now - conn.last_ping >= heartbeat:
                    conn.last_ping = now
                    conn.control(WsPing(), droppable=True)
            if now >= next_resync:
                # A safety net under the fan-out: a lost notice waits at most this long.
                self.resync()
                next_resync = now + resync
