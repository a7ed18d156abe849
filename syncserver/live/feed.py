"""A tenant's feed: reads each new page of the log once and offers it to every live connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING

from syncproto.messages import (
    EntityView,
    Unavailable,
    WsChanges,
)
from syncserver.auth.scopes import Scope
from syncserver.keys.keyring import TenantCipher
from syncserver.live.connection import Connection, Frame, encode, log
from syncserver.sync import cursor
from syncserver.sync.pull import PullService
from syncstore.records import EntityRecord

if TYPE_CHECKING:
    from syncserver.live.hub import LiveHub


class Page:
    """Entities the feed read in one go: every entity whose latest seq is in ``(after, upto]``."""

    __slots__ = ("_frames", "_views", "after", "cipher", "more", "rows", "stamp_ms", "upto")

    def __init__(
        self,
        after: int,
        rows: list[EntityRecord],
        more: bool,
        cipher: TenantCipher,
    ) -> None:
        self.after = after
        self.upto = rows[-1].seq
        self.rows = rows
        self.more = more
        self.cipher = cipher
        self.stamp_ms = max(row.updated_at for row in rows)
        self._views: dict[tuple[int, int], tuple[list[EntityView], list[Unavailable]]] = {}
        self._frames: dict[tuple[int, int, str, int, int], Frame] = {}

    def forget(self) -> None:
        """Drop the decoded views and encoded frames; they are rebuilt from the rows if asked for again."""
        self._views.clear()
        self._frames.clear()

    def views(self, pull: PullService, after: int, since: int) -> tuple[list[EntityView], list[Unavailable]]:
        """The entities changed after ``after``, with their fields changed after ``since`` (where the device was
        last whole, ``cursor.Position``), and the rows that failed their integrity check (cached)."""
        views = self._views.get((after, since))
        if views is None:
            # This page's views are shared by the subscribers here: not kept again in the pull's view cache.
            views = pull.views(self.cipher, [(row, since) for row in self.rows if row.seq > after], share=False)
            self._views[(after, since)] = views
        return views

    def since_after(self, conn: Connection) -> int:
        """Where ``conn`` is whole once it has this page: its ``since`` while more pages follow, else ``upto``."""
        return conn.since if self.more else self.upto

    def frame(self, pull: PullService, conn: Connection) -> Frame | None:
        """This page for ``conn`` (from its position), or None when its filters leave nothing."""
        after, since = conn.position, conn.since
        views, unavailable = self.views(pull, after, since)
        whole = self.since_after(conn)
        next_cursor = cursor.encode(conn.tenant, self.upto, whole, scope=conn.scope_key, floor=conn.floor)
        if conn.filtered:
            mine = [v for v in views if conn.wants(v)]
            # Without a view a per-entity scope filter cannot decide: only a collection filter applies.
            bad = [u for u in unavailable if conn.scope is None and conn.wants_collection(u.collection)]
            if not mine and not bad:
                return None
            data = encode(_changes(mine, next_cursor, self.more, bad), conn.encoding)
            return Frame(data, self.upto, self.stamp_ms, since=whole)
        key = (after, since, conn.encoding, conn.scope_key, conn.floor)
        shared = self._frames.get(key)
        if shared is None:  # one frame object for every connection at this cursor: frames are never mutated
            data = encode(_changes(views, next_cursor, self.more, unavailable), conn.encoding)
            shared = self._frames[key] = Frame(data, self.upto, self.stamp_ms, since=whole)
        return shared


def _channels(conn: Connection) -> frozenset[str]:
    return Scope.of(conn.principal).channels or frozenset()


def _changes(views: list[EntityView], next_cursor: str, more: bool, unavailable: list[Unavailable]) -> WsChanges:
    message = WsChanges(views, next_cursor, more)
    if unavailable:
        message.unavailable = unavailable
    return message


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

    def drop(self) -> None:
        """Forget every page (and the keys they hold) and stop reading: the tenant is gone (``LiveHub.forget``)."""
        for page in self.pages:
            page.forget()
        self.pages.clear()
        self.cached_rows = 0
        if self._retry is not None:
            self._retry.cancel()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

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
        if record is None and self.hub.feeds.get(self.tenant) is self:
            self.hub.forget(self.tenant)  # erased, here or in another process
            return
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
        quiet = await self._quiet(page)  # before the feed moves on: if it fails, the page is read again
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
                if conn in quiet:
                    # Nothing after its position in any of its channels: its pull would find nothing.
                    conn.position = conn.since = page.upto
                else:
                    self.hub.catch_up(conn)  # its own scoped pull (evictions, entities entering its scope)
        return True

    async def _quiet(self, page: Page) -> set[Connection]:
        """The live drivers behind ``page`` that nothing after their position concerns: no row of their
        channels was written since (an entity changing in one, or leaving it), so their pull would find nothing.

        One read for all of them, instead of a scoped pull each: with hundreds of drivers connected, each
        commit woke every one of them for a pull that found nothing for all but a few (benchmarks/README.md,
        "Live drivers woken only by their channels"). A connection that attaches or moves back meanwhile
        is not in the set: it gets its pull.
        """
        behind = {c: c.position for c in self.connections if c.live and not c.shared and c.position < page.upto}
        if not behind:
            return set()
        after = min(behind.values())
        channels = sorted({ch for c in behind for ch in _channels(c)})
        latest = await self.hub.pull.access.latest_in_channels(self.tenant, channels, after)
        return {
            c
            for c, position in behind.items()
            if c.position >= position and all(latest.get(ch, 0) <= c.position for ch in _channels(c))
        }

    def offer(self, conn: Connection, page: Page) -> None:
        if conn.position >= page.upto:
            return
        if conn.position < page.after:
            self.hub.catch_up(conn)
            return
        frame = page.frame(self.hub.pull, conn)
        if frame is None:
            conn.position, conn.since = page.upto, page.since_after(conn)
        elif not conn.offer(frame):  # overflowed: ``on_overflow`` started its catch-up
            log.info("live connection of %s/%s lags; it will resume from the log", conn.tenant, conn.principal.sub)
