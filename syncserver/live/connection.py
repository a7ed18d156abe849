"""One WebSocket subscriber: its place in the log, its bounded send queue and the frames it is sent."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import ClassVar

import msgspec
from prometheus_client import Counter as MetricCounter
from prometheus_client import Gauge

from syncproto.messages import (
    EntityView,
    WsEncoding,
    WsServerMessage,
    msgpack_encoder,
)
from syncserver.auth.scopes import Scope
from syncserver.auth.tokens import Principal
from syncserver.settings import LiveSettings
from syncserver.sync import cursor

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


class Frame:
    """One outgoing message. ``seq`` is set on change frames: the seq their cursor points at, and ``since``
    where that cursor says the device was last whole (``cursor.Position``; equal to ``seq`` unless more
    pages follow). ``stamp_ms`` on live frames: when the newest of their changes was pushed (for the lag
    metric). ``claims`` on control frames that carry a cursor (``synced``, ``welcome``): a client stores
    it, so such a frame queued behind a change frame claims that frame and must not outlive it."""

    __slots__ = ("claims", "data", "seq", "since", "size", "stamp_ms")

    def __init__(
        self,
        data: Data,
        seq: int | None = None,
        stamp_ms: int | None = None,
        since: int | None = None,
        *,
        claims: bool = False,
    ) -> None:
        self.data = data
        self.seq = seq
        self.since = seq if since is None else since
        self.size = len(data)
        self.stamp_ms = stamp_ms
        self.claims = claims


class Connection:
    """One subscriber: its place in the log and its bounded send queue.

    ``position``: changes up to this seq are queued or sent. ``handed``: up to this
    seq the writer has taken them for the socket. An overflow rewinds ``position``
    to ``handed``, so a dropped frame is read again from the log, never lost.
    ``since`` and ``handed_since``: where the device was last whole at each of
    them (``cursor.Position``): an entity first met on a later page carries every
    field changed after it.

    ``epoch`` counts the overflows. A catch-up reads from the position it had
    when it started: a frame it built before an overflow (or a page it was still
    reading) belongs to the old epoch and is discarded (``put`` refuses it), and
    the catch-up starts again from ``handed``.

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
        "epoch",
        "expires_at",
        "floor",
        "handed",
        "handed_since",
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
        "scope_key",
        "settings",
        "shared",
        "since",
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
        since: int | None = None,
        floor: int = 0,
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
        self.epoch = 0
        self.since = self.handed_since = position if since is None else since
        self.floor = floor
        """``cursor.Position.floor`` of this session's catch-up (a pull from the start records the purge it began
        after); carried in every cursor it hands out while that catch-up is under way."""
        self.has_cursor = has_cursor
        self.collections = collections
        self._collection_set = frozenset(collections) if collections is not None else None
        self.scope = scope
        self.shared = Scope.of(principal).unrestricted
        self.scope_key = cursor.scope_key(Scope.of(principal))
        """What this session's cursors are bound to (a device whose scope changes gets ``reset``, ``sync.cursor``)."""
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
        if not self.wants_collection(view.collection):
            return False
        return self.scope is None or self.scope(self.principal, view)

    def wants_collection(self, collection: str) -> bool:
        return self._collection_set is None or collection in self._collection_set

    def cursor(self) -> str | None:
        if not self.position and not self.has_cursor:
            return None
        return cursor.encode(self.tenant, self.position, self.since, scope=self.scope_key, floor=self.floor)

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
        A message with a cursor (``synced``) is marked: an overflow drops it with the change frames
        queued before it (its cursor claims them; the catch-up that follows sends a new one).
        """
        if self.close_code is not None:
            return
        frame = Frame(encode(message, self.encoding), claims=getattr(message, "cursor", None) is not None)
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

    async def put(self, frame: Frame, epoch: int) -> bool:
        """Queue a catch-up frame, waiting until at most one change frame is queued (flow control).

        ``epoch`` is the connection's ``epoch`` when the frame's page was read. If an overflow came since
        (while the page was read or while this waits), the frame follows a position that was rewound: it
        is discarded and False returned (the catch-up reads again from the new position).
        """
        await self.wait_room()
        if self.epoch != epoch:
            return False
        self._append(frame)
        return True

    async def wait_room(self) -> None:
        while self._changes > 1:
            await self._wait_progress()

    async def wait_not_full(self, size: int = 0) -> None:
        """Until one more frame of ``size`` bytes fits (or a close is requested)."""
        while self.full(size) and self.close_code is None:
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
        """The writer's side: the next frame to send (call ``sent`` after it), or None: the writer stops.

        Once a close is requested the change stream stops (it can be read again from the log), but
        the control frames already queued still go out: among them the error that explains the close
        (not a ``synced`` queued behind a dropped change frame: its cursor claims that frame).
        """
        if self.close_code is not None and self._changes:
            self._drop_changes()
        if not self._queue:
            self._writing = False
            return None
        frame = self._queue.pop(0)
        self._bytes -= frame.size
        if frame.seq is not None:
            self._changes -= 1
            self.handed = frame.seq
            self.handed_since = frame.seq if frame.since is None else frame.since
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
            self.since = frame.seq if frame.since is None else frame.since
        if len(self._queue) > self.max_queue_len:
            self.max_queue_len = len(self._queue)
            global _high_water
            if self.max_queue_len > _high_water:
                _high_water = self.max_queue_len
                QUEUE_HIGH_WATER.set(_high_water)
        self.kick()

    def _drop_changes(self) -> None:
        """Drop the queued change frames, and every frame with a cursor queued behind one of them.

        A ``synced`` queued after a change frame carries a cursor at or past that frame: a client that
        stored it and reconnected would never get the dropped changes. It goes too; the catch-up that
        resumes from ``handed`` sends a ``synced`` of its own once it is up to date.
        """
        kept: list[Frame] = []
        behind = False
        for frame in self._queue:
            if frame.seq is not None:
                behind = True
            elif not (behind and frame.claims):
                kept.append(frame)
        self._queue = kept
        self._bytes = sum(f.size for f in kept)
        self._changes = 0

    def _overflow(self) -> None:
        self._drop_changes()
        self._progressed()
        self.position, self.since = self.handed, self.handed_since
        self.epoch += 1  # whatever a catch-up read from the old position is stale
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
