"""One sync round trip: push the outbox in batches, then pull to the end (PROTOCOL §4, §8), then read
back entities a pull named ``unavailable`` when their time has come (``syncclient.unavailable``).

Memory stays bounded by one batch and one page, however long the outbox is:
rows are read from SQLite a batch at a time and every page is committed
before the next is fetched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from syncclient.errors import ProtocolViolation, ServerError, SyncError
from syncclient.events import Event
from syncclient.localstore import LocalStore
from syncclient.transport.interface import Transport
from syncproto import errors
from syncproto.messages import PullRequest, PushRequest

if TYPE_CHECKING:
    from syncclient.unavailable import UnavailableEntities

__all__ = ["RoundTrip", "SyncStats"]

log = logging.getLogger("syncclient")

MAX_IDLE_ROUNDS = 5
"""Push rounds in a row that settle nothing before we give up (a misbehaving server)."""
MAX_RESETS = 2
"""Resets in one pull (tombstones can be collected while we page) before we give up."""


@dataclass
class SyncStats:
    pushes: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    renumbered: int = 0
    pages: int = 0
    pulled: int = 0
    """Entities pulled (an unavailable entity read back with its whole state counts too)."""
    resets: int = 0


class RoundTrip:
    def __init__(
        self,
        store: LocalStore,
        emit: Callable[[Event], None],
        observe_hlc: Callable[[tuple[int, int]], None],
        *,
        batch_size: int = 500,
        batch_bytes: int = 1 << 20,
        pull_limit: int = 1000,
        unavailable: UnavailableEntities | None = None,
    ) -> None:
        self.store = store
        self.emit = emit
        self.observe_hlc = observe_hlc
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.pull_limit = pull_limit
        self.unavailable = unavailable

    async def run(self, transport: Transport) -> SyncStats:
        stats = SyncStats()
        server_behind = await self.push(transport, stats)
        if server_behind:
            # The server forgot acknowledged changes, so our cursor may point past its log:
            # start over from its current state, as on ``reset``.
            log.warning("the server lost changes of %s; pulling its state from scratch", self.store.replica)
            self.store.reset()
            stats.resets += 1
        await self.pull(transport, stats)
        if self.unavailable is not None:
            stats.pulled += await self.unavailable.after_round()
        return stats

    async def push(self, transport: Transport, stats: SyncStats) -> bool:
        """Push every pending change; True if the server turned out to have lost some acknowledged ones."""
        # Changes written while we push wait for the next round, so a busy app cannot keep us here.
        up_to = self.store.counter()
        size = self.batch_size
        idle = 0
        server_behind = False
        while rows := self.store.pending(size, self.batch_bytes, up_to):
            try:
                response = await transport.push(PushRequest(self.store.replica, [r.change for r in rows]))
            except ServerError as exc:
                if exc.status != 413:
                    raise
                if len(rows) > 1:
                    size = max(1, len(rows) // 2)  # the server's limits are lower than ours
                    continue
                # One change alone is too large: it can never be accepted, so it must not block the rest.
                rejected, renumbered = self.store.reject_locally(rows[0], exc.code, exc.message)
                stats.rejected += 1
                stats.renumbered += renumbered
                self.emit(rejected)
                continue
            stats.pushes += 1
            outcome = self.store.record_results(rows, response.results)
            stats.applied += outcome.applied
            stats.duplicates += outcome.duplicates
            stats.rejected += len(outcome.rejected)
            stats.renumbered += outcome.renumbered
            server_behind = server_behind or outcome.server_behind
            if outcome.renumbered:
                log.warning("renumbered %d pending changes of %s", outcome.renumbered, self.store.replica)
                up_to = max(up_to, outcome.last_n)
            for event in outcome.rejected:
                self.emit(event)
            idle = 0 if outcome.progress else idle + 1
            if idle > MAX_IDLE_ROUNDS:
                raise ProtocolViolation("the server settled none of the pushed changes in several rounds")
        return server_behind

    async def pull(self, transport: Transport, stats: SyncStats) -> None:
        acked_before = self.store.max_acked_seq()
        cursor = self.store.cursor()
        resets = 0
        while True:
            try:
                page = await transport.pull(PullRequest(cursor=cursor, limit=self.pull_limit))
            except ServerError as exc:
                if exc.code != errors.INVALID_CURSOR or cursor is None:
                    raise
                page = None  # a cursor of another server (restored, replaced): start over
            if page is None or page.reset:
                if cursor is None or resets >= MAX_RESETS:
                    raise SyncError("the server keeps asking for a reset, even of a pull from the beginning")
                resets += 1
                stats.resets += 1
                log.warning("sync reset for %s: pulling from the start, keeping the outbox", self.store.replica)
                self.store.reset()
                cursor = None
                continue
            events = self.store.apply_page(page.changes, page.evictions, page.cursor, page.unavailable or ())
            stats.pages += 1
            stats.pulled += len(page.changes)
            for view in page.changes:
                for f in view.fields.values():
                    for s in f.siblings or ():
                        self.observe_hlc(s.hlc)
            for event in events:
                self.emit(event)
            cursor = page.cursor
            if not page.more:
                break
        # A pull that began with (or resumed) a reset has brought the server's whole state:
        # what it did not bring back is gone for this replica.
        done = False
        while not done:
            dropped, done = self.store.drop_stale()
            for event in dropped:
                self.emit(event)
        self.store.drop_acked(acked_before)
