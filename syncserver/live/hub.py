"""The hub: this process's live connections by tenant, listening to the fan-out."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from syncproto import errors
from syncproto.messages import (
    PullRequest,
    WsChanges,
    WsPing,
    WsReset,
    WsSynced,
)
from syncserver.errors import ApiError
from syncserver.fanout.interface import Fanout
from syncserver.live.admission import Admission
from syncserver.live.connection import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_TIMEOUT,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNAVAILABLE,
    Connection,
    Frame,
    ScopeFilter,
    encode,
    log,
)
from syncserver.live.feed import Feed
from syncserver.settings import LiveSettings
from syncserver.sync import cursor
from syncserver.sync.pull import PullService
from syncstore import TRANSIENT_ERRORS
from syncstore.store import Store, TenantNotFound


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
        self.admission = Admission(settings)
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

    def forget(self, tenant: str) -> None:
        """The tenant is gone (erased): close its connections and drop its feed, with the pages and keys it holds.

        Called by the erase in this process; a feed in another process finds the tenant gone at its next read
        of the head (every fan-out resync and the periodic one), and comes here too.
        """
        feed = self.feeds.pop(tenant, None)
        if feed is None:
            return
        for conn in list(feed.connections):
            conn.request_close(CLOSE_UNAUTHORIZED, errors.TENANT_UNKNOWN)
            if conn.catchup is not None and conn.catchup is not asyncio.current_task():
                conn.catchup.cancel()
        feed.drop()

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
        """Catch ``conn`` up from its position. A catch-up already running carries on: after an overflow
        (a new ``Connection.epoch``) it drops what it read and starts again from the rewound position."""
        conn.live = False
        if conn.catchup is None or conn.catchup.done():
            conn.catchup = asyncio.create_task(self._catch_up(conn), name="live-catch-up")

    async def _catch_up(self, conn: Connection) -> None:
        feed = self.feeds.get(conn.tenant)
        if feed is None or conn not in feed.connections:
            return  # detached meanwhile
        try:
            epoch: int | None = None
            while conn.close_code is None:
                if epoch != conn.epoch:
                    # A start, or an overflow since the last pass: go on from ``handed``, once the socket
                    # has taken what is queued (an overflow leaves only control frames there).
                    epoch = conn.epoch
                    if conn.lagging:
                        await conn.wait_drained()
                        continue  # another overflow meanwhile? start over again
                await conn.wait_room()
                await feed.ready.wait()
                if epoch != conn.epoch:
                    continue
                assert feed.read_upto is not None
                if conn.position >= feed.read_upto:
                    synced = WsSynced(conn.cursor())
                    size = len(encode(synced, conn.encoding))
                    if conn.full(size):
                        # Queued as it is, it would overflow: the change frames before it would be dropped,
                        # and its cursor would claim them. Wait for room, then look again from the top.
                        await conn.wait_not_full(size)
                        continue
                    conn.live, conn.lagging = True, False
                    # It fits: nothing queued before it is dropped now. A later overflow drops it with them.
                    conn.control(synced)
                    return
                page = feed.covering(conn.position) if conn.shared else None
                if page is None:
                    await self._read_log(conn, epoch)
                    continue
                frame = page.frame(self.pull, conn)
                if frame is None:
                    conn.position, conn.since = page.upto, page.since_after(conn)
                else:
                    await conn.put(frame, epoch)
        except asyncio.CancelledError:
            raise
        except TRANSIENT_ERRORS as exc:
            log.warning("catch-up stopped, the database is unavailable: %s", exc)
            conn.request_close(CLOSE_UNAVAILABLE, errors.UNAVAILABLE)
        except (TenantNotFound, ApiError) as exc:
            if isinstance(exc, ApiError) and exc.code != errors.TENANT_UNKNOWN:
                log.exception("catch-up failed for a connection of tenant %s", conn.tenant)
                conn.request_close(CLOSE_INTERNAL, errors.INTERNAL)
            else:  # erased (perhaps by another process): its connections end here, as an unknown tenant
                self.forget(conn.tenant)
                conn.request_close(CLOSE_UNAUTHORIZED, errors.TENANT_UNKNOWN)
        except Exception:
            log.exception("catch-up failed for a connection of tenant %s", conn.tenant)
            conn.request_close(CLOSE_INTERNAL, errors.INTERNAL)
        finally:
            if conn.catchup is asyncio.current_task():
                conn.catchup = None  # a finished task is dead weight on an idle connection

    async def _read_log(self, conn: Connection, epoch: int) -> None:
        """One page of catch-up: an HTTP pull from the connection's cursor, filtered by its scope.

        If the connection overflowed while the page was read (``epoch`` moved on), the page is discarded:
        it was read from a position that has been rewound since.
        """
        head: int | None = None
        if conn.shared:
            # A tenant-wide pull's cursor stops at its last row: the head read before it says how far it saw.
            record = await self.store.get_tenant(conn.tenant)
            head = record.last_seq if record is not None else 0
        request = PullRequest(cursor=conn.cursor(), limit=self.settings.page_limit, collections=conn.collections)
        response = await self.pull.pull(conn.principal, request)
        if conn.epoch != epoch:
            return
        if response.reset:
            # Once the socket has taken every queued frame: ``handed`` must not move past the reset.
            await conn.wait_drained()
            if conn.epoch != epoch or conn.close_code is not None:
                return
            conn.control(WsReset())
            conn.position = conn.handed = conn.since = conn.handed_since = conn.floor = 0
            conn.has_cursor = False
            return
        last, since, floor = cursor.decode_position(conn.tenant, response.cursor)
        # Without more pages the pull has seen every commit up to ``head``, matching or not. A scoped pull's
        # cursor is already there: it read the tenant's head before its page, in the same read (``scoped_page``).
        position = last if response.more or head is None else max(last, head)
        whole = since if response.more else position
        conn.floor = floor if response.more else position
        conn.has_cursor = True
        views = [v for v in response.changes if conn.scope is None or conn.scope(conn.principal, v)]
        # Without a view a per-entity scope filter cannot decide on an unavailable entity: it is left out.
        unavailable = response.unavailable if response.unavailable and conn.scope is None else []
        if not views and not response.evictions and not unavailable:
            conn.position, conn.since = position, whole
            return
        message = WsChanges(
            views,
            cursor.encode(conn.tenant, position, whole, scope=conn.scope_key, floor=conn.floor),
            response.more,
            response.evictions,
        )
        if unavailable:
            message.unavailable = unavailable
        await conn.put(Frame(encode(message, conn.encoding), position, since=whole), epoch)

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
