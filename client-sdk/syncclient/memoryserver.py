"""An in-memory sync server for tests, built only on syncproto's merge rules.

It speaks protocol v1 as the real server does: per-replica counter order
(duplicate, out of order, ``n_reused``), ``apply_change`` for the merge, a
conflict log, dead letters, delta pulls by field, cursors and ``reset``. It
has one tenant, no auth, no encryption and no persistence.

Usage::

    server = MemoryServer()
    phone = SyncClient(None, None, "phone-1", tmp / "phone.db", transport=MockTransport(server))
    web = SyncClient(None, None, "web-1", tmp / "web.db", transport=MockTransport(server.as_user("dispatcher")))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from syncclient.errors import ServerError
from syncproto import errors
from syncproto.hlc import clamp, iso, now_ms
from syncproto.merge import ChangeRejected, ConflictDraft, EntityState, apply_change
from syncproto.messages import (
    Applied,
    Change,
    ConflictValue,
    ConflictView,
    Duplicate,
    EntityView,
    ErrorBody,
    OutOfOrder,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
    PushResult,
    Rejected,
)
from syncproto.schema import Schema
from syncproto.views import entity_view

__all__ = ["DeadLetter", "LoggedChange", "MemoryServer"]

_CURSOR_PREFIX = "mem:"


@dataclass
class _Entity:
    state: EntityState
    seq: int
    field_seq: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LoggedChange:
    """One entry of the change log."""

    seq: int
    replica: str
    n: int
    id: str
    user: str
    change: Change


@dataclass(frozen=True)
class DeadLetter:
    replica: str
    user: str
    change: Change
    error: ErrorBody


class MemoryServer:
    """Call it with a ``PushRequest`` or ``PullRequest`` (it is a ``MockTransport`` handler)."""

    def __init__(
        self,
        schema: Schema | None = None,
        *,
        user: str = "mock",
        max_changes_per_push: int = 1000,
        max_pull_limit: int = 5000,
        max_clock_skew_ms: int = 5 * 60 * 1000,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.schema = schema or Schema()
        self.user = user
        self.max_changes_per_push = max_changes_per_push
        self.max_pull_limit = max_pull_limit
        self.max_clock_skew_ms = max_clock_skew_ms
        self.clock = clock
        self.seq = 0
        self.purged_seq = 0
        self.entities: dict[tuple[str, str], _Entity] = {}
        self.hwm: dict[str, int] = {}
        self.owners: dict[str, str] = {}
        self.dots: dict[tuple[str, int], str] = {}
        self.log: list[LoggedChange] = []
        self.conflicts: list[ConflictView] = []
        self.dead_letters: list[DeadLetter] = []
        self.refusals: dict[tuple[str, int], ErrorBody] = {}

    def __call__(self, request: PushRequest | PullRequest) -> PushResponse | PullResponse:
        return self.handle(request, self.user)

    def as_user(self, user: str) -> Callable[[PushRequest | PullRequest], PushResponse | PullResponse]:
        """A handler whose pushes are made by ``user`` (conflict values name their user)."""
        return lambda request: self.handle(request, user)

    def handle(self, request: PushRequest | PullRequest, user: str) -> PushResponse | PullResponse:
        match request:
            case PushRequest():
                return self.push(request, user)
            case PullRequest():
                return self.pull(request)
        raise TypeError(f"not a request: {request!r}")

    # --- push -------------------------------------------------------------------

    def push(self, request: PushRequest, user: str | None = None) -> PushResponse:
        user = user or self.user
        if len(request.changes) > self.max_changes_per_push:
            raise ServerError(413, errors.TOO_MANY_CHANGES, f"at most {self.max_changes_per_push} changes per push")
        if self.owners.setdefault(request.replica, user) != user:
            raise ServerError(403, errors.REPLICA_FORBIDDEN, "this replica id belongs to another user")
        return PushResponse([self._one(request.replica, c, user) for c in request.changes])

    def _one(self, replica: str, change: Change, user: str) -> PushResult:
        hwm = self.hwm.get(replica, 0)
        if change.n <= hwm:
            seen = self.dots.get((replica, change.n))
            if seen is not None and seen != change.id:
                error = ErrorBody(errors.N_REUSED, f"counter {change.n} was already used by change {seen}")
                return Rejected(change.id, change.n, error)
            refused = self.refusals.get((replica, change.n))
            if refused is not None:  # answered as it was first (PROTOCOL §4.2)
                return Rejected(change.id, change.n, refused)
            return Duplicate(change.id, change.n)
        if change.n > hwm + 1:
            return OutOfOrder(change.id, change.n, hwm + 1)
        # Processing, applied or rejected, advances the high-water mark: a bad change never blocks.
        self.hwm[replica] = change.n
        self.dots[(replica, change.n)] = change.id
        key = (change.collection, change.entity)
        current = self.entities.get(key) or _Entity(EntityState(), 0)
        now = self.clock()
        stamp, clamped = clamp(change.hlc, now, self.max_clock_skew_ms)
        try:
            outcome = apply_change(
                current.state, change, replica, self.schema.get(change.collection), hlc=stamp, user=user
            )
        except ChangeRejected as exc:
            self.dead_letters.append(DeadLetter(replica, user, change, ErrorBody(exc.code, exc.message)))
            self.refusals[(replica, change.n)] = ErrorBody(exc.code, exc.message)
            return Rejected(change.id, change.n, ErrorBody(exc.code, exc.message))
        self.seq += 1
        field_seq = dict(current.field_seq)
        field_seq.update(dict.fromkeys(outcome.changed, self.seq))
        self.entities[key] = _Entity(outcome.state, self.seq, field_seq)
        self.log.append(LoggedChange(self.seq, replica, change.n, change.id, user, change))
        for idx, draft in enumerate(outcome.conflicts):
            self.conflicts.append(self._conflict(change, idx, draft, now))
        if clamped:
            original = ConflictValue(None, replica, change.n, user, change.hlc)
            used = ConflictValue(None, replica, change.n, user, stamp)
            self.conflicts.append(
                ConflictView(
                    id=f"c{self.seq}.{len(outcome.conflicts)}",
                    collection=change.collection,
                    entity=change.entity,
                    field=None,
                    kind="clock_skew",
                    rule="clamp",
                    seq=self.seq,
                    created_at=iso(now),
                    status="open",
                    values=[original],
                    winner=used,
                )
            )
        return Applied(change.id, change.n, self.seq)

    def _conflict(self, change: Change, idx: int, draft: ConflictDraft, now: int) -> ConflictView:
        values = [ConflictValue(s.value, s.replica, s.n, s.user, s.hlc) for s in draft.values]
        w = draft.winner
        return ConflictView(
            id=f"c{self.seq}.{idx}",
            collection=change.collection,
            entity=change.entity,
            field=draft.field,
            kind=draft.kind,
            rule=draft.rule,
            seq=self.seq,
            created_at=iso(now),
            status="open",
            values=values,
            winner=None if w is None else ConflictValue(w.value, w.replica, w.n, w.user, w.hlc),
        )

    # --- pull -------------------------------------------------------------------

    def pull(self, request: PullRequest) -> PullResponse:
        after, since, floor = _decode_cursor(request.cursor)
        # As the server's: a pull from the start resets only for a collection after it began (its ``floor``).
        if request.cursor is not None and floor < self.purged_seq:
            return PullResponse(reset=True)
        if request.cursor is None:
            floor = self.purged_seq
        wanted: Sequence[str] | None = request.collections
        rows = sorted(
            (
                (e.seq, key, e)
                for key, e in self.entities.items()
                if e.seq > after and (wanted is None or key[0] in wanted)
            ),
            key=lambda row: row[0],
        )
        limit = min(request.limit, self.max_pull_limit)
        more = len(rows) > limit
        rows = rows[:limit]
        # An entity met on a later page may have changed before ``after`` too: the device was whole at ``since``.
        views = [self._view(key, e, since) for _, key, e in rows]
        last = rows[-1][0] if rows else after
        cursor = f"{_CURSOR_PREFIX}{last}" + (f".{since}" if more and since < last else "")
        if more and since == 0 and since < last and floor:
            cursor += f"~{floor}"
        return PullResponse(changes=views, cursor=cursor, more=more)

    def _view(self, key: tuple[str, str], e: _Entity, after: int) -> EntityView:
        changed = None if after == 0 else [f for f, s in e.field_seq.items() if s > after]
        return entity_view(e.state, self.schema.get(key[0]), key[1], e.seq, changed)

    # --- inspection and faults ------------------------------------------------------

    def entity(self, collection: str, entity: str) -> EntityView | None:
        """The full merged view of one entity, as ``GET /v1/entities/...`` returns it."""
        e = self.entities.get((collection, entity))
        return None if e is None else self._view((collection, entity), e, 0)

    def expire_cursors(self) -> None:
        """Act as if tombstones were collected now: every older cursor gets ``reset``."""
        self.purged_seq = self.seq


def _decode_cursor(cursor: str | None) -> tuple[int, int, int]:
    """``(seq, since, floor)``: where the next page starts, where the device was last whole, and the collection
    watermark a reset is decided against (as the server's ``cursor.Position``)."""
    if cursor is None:
        return 0, 0, 0
    raw, _, floor = cursor.removeprefix(_CURSOR_PREFIX).partition("~")
    seq, _, since = raw.partition(".")
    if (
        not cursor.startswith(_CURSOR_PREFIX)
        or not seq.isdigit()
        or not (since or seq).isdigit()
        or int(since or seq) > int(seq)
        or (floor and not floor.isdigit())
    ):
        raise ServerError(400, errors.INVALID_CURSOR, "not a cursor of this server")
    whole = int(since or seq)
    return int(seq), whole, int(floor) if floor else whole
