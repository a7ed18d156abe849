"""The device's durable state in one SQLite file.

It holds the outbox, the last pulled view of each entity (``EntityView`` JSON
with its vv and, for text, the Yjs state), the cursor, the replica's counter,
its last HLC stamp, rejected changes, the last heard status of each
attachment a pulled entity referenced (``attachment_status``), and the entities
a pull named ``unavailable`` (``unavailable``, committed with that page's cursor).

A reset (PROTOCOL §4.4 ``reset``) does not wipe the synced state at once: it bumps the
``epoch`` (in ``meta``) and clears the cursor in one transaction. The old rows of
``entities``, ``attachment_status`` and ``unavailable`` stay (reads show them, and local
writes take their version vectors as context) while the pull from the start rewrites each
row it brings at the new epoch; when that pull ends with ``more: false``
(``drop_stale``), the rows of older epochs, which the server no longer has for this
replica, are dropped. An interrupted reset resumes from the stored mid-pull cursor and
ends the same way. The outbox is never touched.

Durability: WAL journal with ``synchronous=FULL``, so ``COMMIT`` returns only
after the WAL is fsynced. ``enqueue`` takes the next counter and inserts the
outbox row in one transaction: a crash either keeps both or neither, so a
number is never used twice (PROTOCOL §1) and a returned write is on disk.

An outbox row lives until the server's state covers it: ``acked`` rows (the
server answered applied or duplicate) stay for optimistic reads until a pull
brings an entity vv that includes them, so a read never flickers back to the
old value between the push and the pull.

Not safe for two processes on one file; one client per file.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import msgspec

from syncclient.errors import ProtocolViolation
from syncclient.events import AttachmentStatusChanged, EntityUnavailable, Event, RejectedChange, RemoteChange
from syncclient.state import events_for, merge_delta
from syncproto import errors
from syncproto.attachments import AttachmentStatus, refs_in_view
from syncproto.messages import (
    Applied,
    Change,
    Duplicate,
    EntityView,
    Eviction,
    OutOfOrder,
    PushResult,
    Rejected,
    Unavailable,
    change_decoder,
    json_encoder,
)

__all__ = ["LocalStore", "OutboxRow", "PushOutcome"]

SCHEMA_VERSION = 2
"""1: the first layout; 2: an ``epoch`` column on the synced-state tables (a reset keeps old rows until the
pull from the start ends)."""
STALE_CHUNK = 500
"""Rows of an older epoch dropped (and reported) per transaction when the pull after a reset ends."""
_view_decoder = msgspec.json.Decoder(EntityView)
_hlc_decoder = msgspec.json.Decoder(tuple[int, int])

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- local write order, stable when n is renumbered
    n INTEGER NOT NULL,
    id TEXT NOT NULL UNIQUE,
    collection TEXT NOT NULL,
    entity TEXT NOT NULL,
    size INTEGER NOT NULL,
    change BLOB NOT NULL,
    acked INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS outbox_pending ON outbox (n) WHERE acked = 0;
CREATE INDEX IF NOT EXISTS outbox_entity ON outbox (collection, entity, n);
CREATE TABLE IF NOT EXISTS entities (
    collection TEXT NOT NULL,
    entity TEXT NOT NULL,
    view BLOB NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 0,  -- the reset generation that wrote it (meta epoch)
    PRIMARY KEY (collection, entity)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attachment_status (
    id TEXT PRIMARY KEY,  -- an attachment a pulled entity referenced
    status TEXT NOT NULL,  -- pending, available or refused, as last heard (pull or status refresh)
    epoch INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS unavailable (
    collection TEXT NOT NULL,  -- an entity a pull named unavailable (PROTOCOL §4.4), not read back yet
    entity TEXT NOT NULL,
    seq INTEGER NOT NULL,
    code TEXT NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (collection, entity)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rejections (
    id TEXT PRIMARY KEY,
    n INTEGER NOT NULL,
    collection TEXT NOT NULL,
    entity TEXT NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    change BLOB NOT NULL
);
"""


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    n: int
    change: Change
    size: int
    acked: bool


@dataclass
class PushOutcome:
    """What one push response did to the outbox."""

    applied: int = 0
    duplicates: int = 0
    rejected: list[RejectedChange] = field(default_factory=list)
    renumbered: int = 0
    server_behind: bool = False
    """The server lacks changes it had acknowledged (restored from a backup): our cursor is not to be trusted."""
    last_n: int = 0
    """The highest counter now in use (after renumbering)."""

    @property
    def progress(self) -> bool:
        return bool(self.applied or self.duplicates or self.rejected)


class LocalStore:
    def __init__(self, path: str | Path, replica: str) -> None:
        self.replica = replica
        # One connection, shared by the event loop and any thread that writes;
        # the RLock serialises them and lets transactions nest.
        self._lock = threading.RLock()
        self._depth = 0
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        with self.transaction():
            self._create()
            owner = self._meta("replica")
            if owner is None:
                self._set_meta("replica", replica)
                self._set_meta("schema", str(SCHEMA_VERSION))
            elif owner != replica:
                raise ValueError(f"{path} belongs to replica {owner!r}, not {replica!r}")
            self._migrate(path)

    def _create(self) -> None:
        # executescript would COMMIT the open transaction; run the statements one by one.
        for statement in filter(str.strip, _DDL.split(";")):
            self._db.execute(statement)

    def _migrate(self, path: str | Path) -> None:
        """Bring a file written by an older SDK to ``SCHEMA_VERSION`` (in the opening transaction)."""
        version = int(self._meta("schema") or 1)
        if version > SCHEMA_VERSION:
            raise ValueError(f"{path} has local schema {version}; this SDK reads up to {SCHEMA_VERSION}")
        for table in ("entities", "attachment_status", "unavailable"):  # 1 -> 2
            columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if "epoch" not in columns:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0")
        self._db.execute("CREATE INDEX IF NOT EXISTS entities_epoch ON entities (epoch)")
        if version != SCHEMA_VERSION:
            self._set_meta("schema", str(SCHEMA_VERSION))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic, durable unit. Nested calls join the outer transaction."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0

    # --- meta -----------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def counter(self) -> int:
        """The highest counter this replica has used."""
        with self._lock:
            return int(self._meta("counter") or 0)

    def hlc(self) -> tuple[int, int]:
        with self._lock:
            raw = self._meta("hlc")
            return (0, 0) if raw is None else _hlc_decoder.decode(raw)

    def cursor(self) -> str | None:
        with self._lock:
            return self._meta("cursor")

    def _epoch(self) -> int:
        return int(self._meta("epoch") or 0)

    def resetting(self) -> bool:
        """A reset happened and the pull from the start has not ended yet: older rows are still shown."""
        with self._lock:
            return self._meta("stale") is not None

    # --- writes ---------------------------------------------------------------

    def enqueue(self, build: Callable[[int], Change]) -> Change:
        """Number a change with the next counter and commit it to the outbox."""
        with self.transaction():
            n = self.counter() + 1
            change = build(n)
            blob = json_encoder.encode(change)
            self._db.execute(
                "INSERT INTO outbox (n, id, collection, entity, size, change) VALUES (?, ?, ?, ?, ?, ?)",
                (n, change.id, change.collection, change.entity, len(blob), blob),
            )
            self._set_meta("counter", str(n))
            self._set_meta("hlc", json_encoder.encode(change.hlc).decode())
        return change

    # --- reads ----------------------------------------------------------------

    def view(self, collection: str, entity: str) -> EntityView | None:
        """The last pulled view of one entity (no local changes)."""
        with self._lock:
            row = self._db.execute(
                "SELECT view FROM entities WHERE collection = ? AND entity = ?", (collection, entity)
            ).fetchone()
        return None if row is None else _view_decoder.decode(row[0])

    def views(self, collection: str) -> dict[str, EntityView]:
        with self._lock:
            rows = self._db.execute(
                "SELECT entity, view FROM entities WHERE collection = ? ORDER BY entity", (collection,)
            ).fetchall()
        return {entity: _view_decoder.decode(blob) for entity, blob in rows}

    def outbox(self, collection: str, entity: str | None = None) -> dict[str, list[OutboxRow]]:
        """Outbox rows (pending and acked) of one entity or a whole collection, by entity, in counter order."""
        sql = "SELECT seq, n, change, size, acked, entity FROM outbox WHERE collection = ?"
        args: tuple[str, ...] = (collection,)
        if entity is not None:
            sql += " AND entity = ?"
            args += (entity,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY n, seq", args).fetchall()
        out: dict[str, list[OutboxRow]] = {}
        for seq, n, blob, size, acked, ent in rows:
            out.setdefault(ent, []).append(OutboxRow(seq, n, change_decoder.decode(blob), size, bool(acked)))
        return out

    def pending(self, limit: int, max_bytes: int, up_to_n: int) -> list[OutboxRow]:
        """The next changes to push, in counter order: at most ``limit`` rows and ``max_bytes`` (at least one row)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, n, change, size FROM outbox WHERE acked = 0 AND n <= ? ORDER BY n LIMIT ?",
                (up_to_n, limit),
            ).fetchall()
        out: list[OutboxRow] = []
        total = 0
        for seq, n, blob, size in rows:
            if out and total + size > max_bytes:
                break
            total += size
            out.append(OutboxRow(seq, n, change_decoder.decode(blob), size, False))
        return out

    def pending_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM outbox WHERE acked = 0").fetchone()[0])

    def outbox_size(self) -> int:
        """Rows still in the outbox, including acked ones a pull has not confirmed yet."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def max_acked_seq(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT coalesce(max(seq), 0) FROM outbox WHERE acked = 1").fetchone()[0])

    def rejections(self) -> list[RejectedChange]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, n, collection, entity, code, message, change FROM rejections ORDER BY rowid"
            ).fetchall()
        return [
            RejectedChange(i, n, c, e, code, msg, change_decoder.decode(blob)) for i, n, c, e, code, msg, blob in rows
        ]

    def clear_rejections(self, ids: Sequence[str] | None = None) -> None:
        with self.transaction():
            if ids is None:
                self._db.execute("DELETE FROM rejections")
            else:
                self._db.executemany("DELETE FROM rejections WHERE id = ?", [(i,) for i in ids])

    # --- push results ---------------------------------------------------------

    def record_results(self, rows: Sequence[OutboxRow], results: Sequence[PushResult]) -> PushOutcome:
        """Apply one push response to the outbox atomically (PROTOCOL §4.2, client actions)."""
        if len(rows) != len(results):
            raise ProtocolViolation(f"pushed {len(rows)} changes but got {len(results)} results")
        out = PushOutcome()
        reused: list[int] = []
        expected: int | None = None
        with self.transaction():
            for row, result in zip(rows, results, strict=True):
                if (result.id, result.n) != (row.change.id, row.n):
                    raise ProtocolViolation(f"result {result.id}/{result.n} does not match change {row.change.id}")
                match result:
                    case Applied() | Duplicate():
                        self._db.execute("UPDATE outbox SET acked = 1 WHERE seq = ?", (row.seq,))
                        if isinstance(result, Applied):
                            out.applied += 1
                        else:
                            out.duplicates += 1
                    case Rejected(error=err) if err.code == errors.N_REUSED:
                        reused.append(row.n)
                    case Rejected(error=err):
                        out.rejected.append(self._reject(row, err.code, err.message))
                    case OutOfOrder(expected=exp):
                        expected = exp if expected is None else min(expected, exp)
            if reused:
                out.renumbered = self._renumber(min(reused), self.counter() + 1)
            elif expected is not None and not self._has_pending(expected):
                # The server lacks counters we no longer hold (it lost them, or we dropped one):
                # it has not processed any number from ``expected`` on, so our pending changes
                # can take those numbers.
                out.renumbered = self._renumber(expected, expected)
                out.server_behind = True
            out.last_n = self.counter()
        return out

    def reject_locally(self, row: OutboxRow, code: str, message: str) -> tuple[RejectedChange, int]:
        """Drop a change the server can never take (for example larger than any push body), and close the gap it
        leaves; returns the rejection and how many pending changes were renumbered.

        The server never saw its number, so it has processed none after it: the pending changes numbered after
        it take the numbers from its own on. Left open, the gap would make the next push ``out_of_order``, read
        as a server that lost acknowledged changes: a reset, and every synced entity pulled again.
        """
        with self.transaction():
            rejected = self._reject(row, code, message)
            renumbered = self._renumber(row.n + 1, row.n)
            if not renumbered and self.counter() == row.n:
                self._set_meta("counter", str(row.n - 1))
            return rejected, renumbered

    def _reject(self, row: OutboxRow, code: str, message: str) -> RejectedChange:
        c = row.change
        self._db.execute("DELETE FROM outbox WHERE seq = ?", (row.seq,))
        self._db.execute(
            "INSERT OR REPLACE INTO rejections (id, n, collection, entity, code, message, change) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (c.id, row.n, c.collection, c.entity, code, message, json_encoder.encode(c)),
        )
        return RejectedChange(c.id, row.n, c.collection, c.entity, code, message, c)

    def _has_pending(self, n: int) -> bool:
        return self._db.execute("SELECT 1 FROM outbox WHERE acked = 0 AND n = ?", (n,)).fetchone() is not None

    def _renumber(self, from_n: int, start: int) -> int:
        """Give pending changes numbered ``from_n`` and up the numbers ``start, start + 1, ...``, keeping order."""
        rows = self._db.execute(
            "SELECT seq, change FROM outbox WHERE acked = 0 AND n >= ? ORDER BY n", (from_n,)
        ).fetchall()
        for i, (seq, blob) in enumerate(rows):
            change = msgspec.structs.replace(change_decoder.decode(blob), n=start + i)
            new_blob = json_encoder.encode(change)
            self._db.execute(
                "UPDATE outbox SET n = ?, change = ?, size = ? WHERE seq = ?", (start + i, new_blob, len(new_blob), seq)
            )
        if rows:
            self._set_meta("counter", str(start + len(rows) - 1))
        return len(rows)

    # --- attachment statuses ----------------------------------------------------

    def attachment_status(self, attachment_id: str) -> AttachmentStatus | None:
        with self._lock:
            row = self._db.execute("SELECT status FROM attachment_status WHERE id = ?", (attachment_id,)).fetchone()
        return None if row is None else cast(AttachmentStatus, row[0])

    def pending_attachments(self) -> list[str]:
        """Ids last heard as ``pending``, in id order."""
        with self._lock:
            rows = self._db.execute("SELECT id FROM attachment_status WHERE status = 'pending' ORDER BY id").fetchall()
        return [r[0] for r in rows]

    def set_attachment_statuses(self, statuses: Mapping[str, AttachmentStatus]) -> list[Event]:
        """Store these statuses; an ``AttachmentStatusChanged`` for each that differs from a known one."""
        events: list[Event] = []
        with self.transaction():
            epoch = self._epoch()
            for attachment_id, status in sorted(statuses.items()):
                before = self.attachment_status(attachment_id)
                self._db.execute(
                    "INSERT OR REPLACE INTO attachment_status (id, status, epoch) VALUES (?, ?, ?)",
                    (attachment_id, status, epoch),
                )
                if before is not None and before != status:
                    events.append(AttachmentStatusChanged(attachment_id, status, before))
        return events

    def _note_unknown_refs(self, delta: EntityView) -> None:
        """References a pulled view carries without a status (a live frame may omit them) count as pending."""
        epoch = self._epoch()
        for ref in refs_in_view(delta):
            if delta.attachments is None or ref.id not in delta.attachments:
                self._db.execute(
                    "INSERT OR IGNORE INTO attachment_status (id, status, epoch) VALUES (?, 'pending', ?)",
                    (ref.id, epoch),
                )
                self._db.execute("UPDATE attachment_status SET epoch = ? WHERE id = ?", (epoch, ref.id))

    def forget_attachments(self, ids: Sequence[str]) -> None:
        """Drop ids the server no longer shows this replica (unreferenced, or out of its scope)."""
        with self.transaction():
            self._db.executemany("DELETE FROM attachment_status WHERE id = ?", [(i,) for i in ids])

    # --- pull -----------------------------------------------------------------

    def apply_page(
        self,
        changes: Sequence[EntityView],
        evictions: Sequence[Eviction],
        cursor: str | None,
        unavailable: Sequence[Unavailable] = (),
    ) -> list[Event]:
        """Merge one pulled page and store its cursor in the same transaction.

        Entities the page names ``unavailable`` keep what this replica holds and join
        the set ``unavailable()`` lists (an ``EntityUnavailable`` when first named);
        an eviction takes an entity out of it, drops it and, if this replica showed it,
        emits ``RemoteChange(collection, entity, (), deleted=True)``.

        After a reset, a view kept from before it (an older epoch) is replaced, not
        merged: the pull from the start carries every field.
        """
        events: list[Event] = []
        with self.transaction():
            epoch = self._epoch()
            for delta in changes:
                old, old_epoch = self._stored(delta.collection, delta.entity)
                if old is not None and old_epoch < epoch:
                    # Kept from before a reset: the server's whole state replaces it.
                    new = merge_delta(None, delta)
                    found = events_for(old, new, self.replica)
                    if not any(isinstance(e, RemoteChange) for e in found) and _differs(old, new):
                        found.insert(
                            0, RemoteChange(new.collection, new.entity, tuple(sorted(new.fields)), new.deleted)
                        )
                    events.extend(found)
                else:
                    new = merge_delta(old, delta)
                    events.extend(events_for(old, delta, self.replica))
                self._put_view(new)
                events.extend(self.set_attachment_statuses(delta.attachments or {}))
                self._note_unknown_refs(delta)
            for ev in evictions:
                gone = self.view(ev.collection, ev.entity)
                self._db.execute("DELETE FROM entities WHERE collection = ? AND entity = ?", (ev.collection, ev.entity))
                self._db.execute(
                    "DELETE FROM unavailable WHERE collection = ? AND entity = ?", (ev.collection, ev.entity)
                )
                if gone is not None and not gone.deleted:
                    # It left this replica's scope: to the app it is gone, like a delete.
                    events.append(RemoteChange(ev.collection, ev.entity, (), True))
            for u in unavailable:
                known = self._db.execute(
                    "SELECT 1 FROM unavailable WHERE collection = ? AND entity = ?", (u.collection, u.entity)
                ).fetchone()
                self._db.execute(
                    "INSERT OR REPLACE INTO unavailable (collection, entity, seq, code, epoch) VALUES (?, ?, ?, ?, ?)",
                    (u.collection, u.entity, u.seq, u.code, epoch),
                )
                # What we hold of it stays, also through the end of a reset's pull.
                self._db.execute(
                    "UPDATE entities SET epoch = ? WHERE collection = ? AND entity = ?", (epoch, u.collection, u.entity)
                )
                if known is None:
                    events.append(EntityUnavailable(u.collection, u.entity, u.code))
            self._set_meta("cursor", cursor)
        return events

    def _stored(self, collection: str, entity: str) -> tuple[EntityView | None, int]:
        row = self._db.execute(
            "SELECT view, epoch FROM entities WHERE collection = ? AND entity = ?", (collection, entity)
        ).fetchone()
        return (None, 0) if row is None else (_view_decoder.decode(row[0]), int(row[1]))

    def _put_view(self, view: EntityView) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO entities (collection, entity, view, epoch) VALUES (?, ?, ?, ?)",
            (view.collection, view.entity, json_encoder.encode(view), self._epoch()),
        )
        # Acked changes the server state now includes are no longer needed for reads.
        self._db.execute(
            "DELETE FROM outbox WHERE acked = 1 AND collection = ? AND entity = ? AND n <= ?",
            (view.collection, view.entity, view.vv.get(self.replica, 0)),
        )

    # --- unavailable entities ---------------------------------------------------

    def unavailable(self) -> list[Unavailable]:
        """Entities a pull named unavailable and not read back yet, by collection and entity."""
        with self._lock:
            rows = self._db.execute(
                "SELECT collection, entity, seq, code FROM unavailable ORDER BY collection, entity"
            ).fetchall()
        return [Unavailable(c, e, seq, code) for c, e, seq, code in rows]

    def resolve_unavailable(self, item: Unavailable, view: EntityView | None) -> list[Event]:
        """An unavailable entity read back: ``view`` (the whole state) replaces ours, ``None`` (404) drops it.

        Either way it leaves the set. Nothing happens if it left meanwhile (a reset, an
        eviction). Returns the events: always a ``RemoteChange`` (so the app can clear
        its mark), plus ``ConflictDetected`` for sibling sets the view shows.
        """
        with self.transaction():
            gone = self._db.execute(
                "DELETE FROM unavailable WHERE collection = ? AND entity = ?", (item.collection, item.entity)
            )
            if gone.rowcount == 0:
                return []
            if view is None:
                self._db.execute(
                    "DELETE FROM entities WHERE collection = ? AND entity = ?", (item.collection, item.entity)
                )
                return [RemoteChange(item.collection, item.entity, (), True)]
            # The whole state, as a pull from ``cursor: null`` sends it: replaced, not merged.
            whole = msgspec.structs.replace(view, collection=item.collection, entity=item.entity)
            old = self.view(item.collection, item.entity)
            self._put_view(whole)
            events = events_for(old, whole, self.replica)
            events.extend(self.set_attachment_statuses(whole.attachments or {}))
            if not any(isinstance(e, RemoteChange) for e in events):
                events.insert(0, RemoteChange(item.collection, item.entity, tuple(sorted(whole.fields)), whole.deleted))
            return events

    def drop_acked(self, up_to_seq: int) -> None:
        """After a complete pull: acked rows written before it began are in the pulled state."""
        with self.transaction():
            self._db.execute("DELETE FROM outbox WHERE acked = 1 AND seq <= ?", (up_to_seq,))

    def reset(self) -> None:
        """Start over from ``cursor: null`` (PROTOCOL §4.4 ``reset``); never touches the outbox.

        The synced state (views, attachment statuses, unavailable entities) stays readable and
        serves as the context of local writes until the pull from the start ends
        (``drop_stale``): a device that goes offline meanwhile keeps what it had.
        """
        with self.transaction():
            self._set_meta("epoch", str(self._epoch() + 1))
            self._set_meta("stale", "1")
            self._set_meta("cursor", None)

    def drop_stale(self, limit: int = STALE_CHUNK) -> tuple[list[Event], bool]:
        """After a pull ended with ``more: false``: drop up to ``limit`` rows a reset left behind.

        Returns the events (``RemoteChange(deleted=True)`` for each dropped entity that was not
        deleted already) and whether none are left; call again until it says so. Nothing
        happens when no reset is in progress.
        """
        events: list[Event] = []
        with self.transaction():
            if self._meta("stale") is None:
                return events, True
            epoch = self._epoch()
            rows = self._db.execute(
                "SELECT collection, entity, view FROM entities WHERE epoch < ? LIMIT ?", (epoch, limit)
            ).fetchall()
            for collection, entity, blob in rows:
                self._db.execute("DELETE FROM entities WHERE collection = ? AND entity = ?", (collection, entity))
                if not _view_decoder.decode(blob).deleted:
                    events.append(RemoteChange(collection, entity, (), True))
            if len(rows) == limit:
                return events, False
            self._db.execute("DELETE FROM attachment_status WHERE epoch < ?", (epoch,))
            self._db.execute("DELETE FROM unavailable WHERE epoch < ?", (epoch,))
            self._set_meta("stale", None)
        return events, True


def _differs(old: EntityView, new: EntityView) -> bool:
    """The app-visible state changed (a server restored from a backup may even go back)."""
    return (old.vv, old.deleted, old.fields) != (new.vv, new.deleted, new.fields)
