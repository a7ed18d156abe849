"""Admin operations: the conflict log, overrides, entity history, dead letters, the audit log.

The API, the web pages and the CLI all call this one service. Every action that
changes something writes an audit entry (metadata only: ids, seqs, codes).

Server changes. An override or a replay is a change like any other, pushed
through ``PushService`` so it is merged, logged, encrypted and fanned out by the
same code as a device's:

* an **override** comes from the admin's own server replica
  (``server:admin:<sub>``), with the admin as user and the entity's whole version
  vector as context, so it has seen every sibling and collapses them on every
  device at its next sync;
* a **replay** comes from a replica of its own per dead letter
  (``server:replay:<hash>``), with the original user, stamp and context. Its
  change id is derived from the dead letter and the counter, so a retried or
  concurrent replay is answered ``duplicate`` by the push path: a dead letter is
  applied at most once (see docs/adr/0005-admin-server-changes.md).
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal, Protocol

import msgspec

from syncproto import errors
from syncproto.hlc import iso
from syncproto.messages import (
    Applied,
    Change,
    DeleteOp,
    ErrorBody,
    FieldView,
    Op,
    OutOfOrder,
    PushRequest,
    PushResult,
    Rejected,
    SetOp,
)
from syncserver.admin.views import (
    AdminConflict,
    AdminConflictPage,
    AuditEntry,
    AuditPage,
    DeadLetterPage,
    DeadLetterView,
    EntityHistory,
    HistoryEntry,
    OverrideInfo,
    OverrideRequest,
    OverrideResult,
    ReplayResult,
    ServerChange,
)
from syncserver.auth.tokens import Principal
from syncserver.errors import ApiError
from syncserver.keys.keyring import Ciphers, TenantCipher
from syncserver.sync import payloads
from syncserver.sync.conflicts import ConflictService, conflict_id, parse_conflict_id
from syncserver.sync.pull import PullService
from syncserver.sync.push import SERVER_REPLICA_PREFIX, PushService
from syncstore.adminstore import (
    AdminStore,
    AuditRecord,
    ConflictOverride,
    ConflictQuery,
    DeadLetterKey,
    DeadLetterQuery,
)
from syncstore.records import ConflictRecord, DeadLetterRecord
from syncstore.store import Store

SCAN_CHUNK = 200
SCAN_BUDGET = 5000
"""Conflicts examined per page at most when filtering by replica or user (those live in ciphertext)."""
PUSH_ATTEMPTS = 5
_ID = re.compile(r"^[A-Za-z0-9._:@\-]{1,100}$")
_NAMESPACE = uuid.UUID("6f1d3a52-2f0e-4d7e-9a43-6b0f7c2a9e10")


class AdminBackend(Store, AdminStore, Protocol):
    """A store with both halves: the sync contract and the admin one."""


def admin_backend(store: Store) -> AdminBackend:
    """``store`` as an ``AdminBackend``; every backend in ``syncstore`` is one."""
    if not isinstance(store, AdminStore):
        raise TypeError(f"{type(store).__name__} does not implement syncstore.adminstore.AdminStore")
    return store


class ConflictFilters(msgspec.Struct, frozen=True, gc=False):
    """Conflict list filters. ``replica`` and ``user`` match any competing value's writer."""

    collection: str | None = None
    entity: str | None = None
    field: str | None = None
    kind: str | None = None
    status: str | None = None
    replica: str | None = None
    user: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None


def admin_replica(sub: str) -> str:
    """The server replica an admin writes overrides from: readable when the sub is a valid id."""
    if _ID.match(sub):
        return f"{SERVER_REPLICA_PREFIX}admin:{sub}"
    return f"{SERVER_REPLICA_PREFIX}admin:{hashlib.sha256(sub.encode()).hexdigest()[:24]}"


def replay_replica(tenant: str, letter: DeadLetterRecord) -> str:
    """The server replica that replays one dead letter (one per letter: replays are idempotent by dot)."""
    digest = hashlib.sha256(f"{tenant}/{letter.replica_id}/{letter.n}/{letter.change_id}".encode()).hexdigest()
    return f"{SERVER_REPLICA_PREFIX}replay:{digest[:24]}"


def dead_letter_id(replica: str, n: int) -> str:
    return f"{replica}/{n}"


def _cursor_of(letter: DeadLetterRecord) -> str:
    return f"{letter.created_at}:{letter.n}:{letter.replica_id}"


def parse_dead_letter_cursor(value: str) -> DeadLetterKey:
    try:
        at, n, replica = value.split(":", 2)
        return int(at), replica, int(n)
    except ValueError as exc:
        raise ApiError(400, errors.INVALID_REQUEST, f"'{value}' is not a dead-letter cursor") from exc


class AdminService:
    """Admin reads and actions for one principal's tenant. Callers check the admin role."""

    def __init__(
        self,
        store: AdminBackend,
        ciphers: Ciphers,
        push: PushService,
        pull: PullService,
        clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.store = store
        self.ciphers = ciphers
        self.push_service = push
        self.pull_service = pull
        self.clock = clock

    # --- conflicts ---------------------------------------------------------------

    async def list_conflicts(
        self, who: Principal, filters: ConflictFilters, after: str | None, limit: int
    ) -> AdminConflictPage:
        """A page of conflicts in log order. Filtering by replica or user decrypts and scans (bounded)."""
        cipher = await self.ciphers.cipher(who.tenant)
        query = ConflictQuery(
            filters.collection,
            filters.entity,
            filters.field,
            filters.kind,
            filters.status,
            filters.since_ms,
            filters.until_ms,
        )
        cursor = parse_conflict_id(after) if after else None
        scanning = filters.replica is not None or filters.user is not None
        chunk = SCAN_CHUNK if scanning else limit + 1
        found: list[AdminConflict] = []
        examined = 0
        while True:
            rows = await self.store.find_conflicts(who.tenant, cursor, chunk, query)
            for i, row in enumerate(rows):
                view = self._view(cipher, row)
                if not _has_writer(view, filters):
                    cursor, examined = (row.seq, row.idx), examined + 1
                    continue
                if len(found) == limit:  # one more match exists: there is a next page
                    return AdminConflictPage(found, found[-1].id)
                found.append(view)
                cursor, examined = (row.seq, row.idx), examined + 1
                if not scanning and len(found) == limit and i == len(rows) - 1:
                    return AdminConflictPage(found, None)
            if len(rows) < chunk:
                return AdminConflictPage(found, None)
            if examined >= SCAN_BUDGET:
                assert cursor is not None
                return AdminConflictPage(found, conflict_id(*cursor))

    async def get_conflict(self, who: Principal, conflict: str) -> AdminConflict:
        """One conflict, decrypted, with its override (if any) and the field's current state."""
        row = await self._conflict_row(who, conflict)
        cipher = await self.ciphers.cipher(who.tenant)
        view = self._view(cipher, row)
        override = await self.store.conflict_override(who.tenant, row.seq, row.idx)
        if override is not None:
            view.override = OverrideInfo(override.actor, iso(override.created_at), override.change_seq)
        if row.field is not None:
            entity = await self.store.get_entity(who.tenant, row.collection, row.entity_id)
            if entity is not None:
                now = self.pull_service.view(cipher, entity)
                view.current = now.fields.get(row.field, FieldView(kind="register", value=None))
        return view

    async def override(self, who: Principal, conflict: str, choice: OverrideRequest) -> OverrideResult:
        """Write the admin's choice as a server change whose context covers every sibling."""
        row = await self._conflict_row(who, conflict)
        view = self._view(await self.ciphers.cipher(who.tenant), row)
        ops = _override_ops(view, choice)
        entity = await self.store.get_entity(who.tenant, row.collection, row.entity_id)
        context = dict(entity.vv) if entity is not None else {}
        stamp = (self.clock(), 0)

        def make(n: int) -> Change:
            return Change(str(uuid.uuid4()), n, row.collection, row.entity_id, stamp, context, ops)

        replica = admin_replica(who.sub)
        actor = Principal(who.tenant, who.sub, "admin", who.channels)
        result = await self._push_server(actor, replica, make)
        if isinstance(result, Rejected):
            raise ApiError(422, result.error.code, f"the override was rejected: {result.error.message}")
        if not isinstance(result, Applied):
            raise ApiError(503, errors.UNAVAILABLE, "the override could not be applied; try again")
        now = self.clock()
        await self.store.record_override(who.tenant, ConflictOverride(row.seq, row.idx, who.sub, result.seq, now))
        pick = "value" if choice.pick is None else f"pick:{choice.pick}"
        await self._audit(who, "conflict.override", conflict, {"choice": pick, "seq": result.seq, "replica": replica})
        return OverrideResult(
            await self.get_conflict(who, conflict), ServerChange(result.id, replica, result.n, result.seq)
        )

    async def _conflict_row(self, who: Principal, conflict: str) -> ConflictRecord:
        seq, idx = parse_conflict_id(conflict)
        row = await self.store.get_conflict(who.tenant, seq, idx)
        if row is None:
            raise ApiError(404, errors.NOT_FOUND, f"no conflict {conflict}")
        return row

    @staticmethod
    def _view(cipher: TenantCipher, row: ConflictRecord) -> AdminConflict:
        """The API's view of the conflict (``ConflictService.view``, the one place it is built), for an admin."""
        view = ConflictService.view(cipher, row)
        return AdminConflict(**msgspec.structs.asdict(view), overridable=row.kind in ("register", "delete_update"))

    # --- entity history ----------------------------------------------------------

    async def history(self, who: Principal, collection: str, entity: str, after: int, limit: int) -> EntityHistory:
        """The entity's applied changes in seq order (decrypted), its rejected changes, and its state now."""
        cipher = await self.ciphers.cipher(who.tenant)
        rows = await self.store.changes(who.tenant, after, limit + 1, collection=collection, entity_id=entity)
        more = len(rows) > limit
        rows = rows[:limit]
        found = await self.store.find_conflicts(
            who.tenant, None, 10_000, ConflictQuery(collection=collection, entity_id=entity)
        )
        by_seq: dict[int, list[str]] = {}
        for c in found:
            by_seq.setdefault(c.seq, []).append(conflict_id(c.seq, c.idx))
        entries = [
            HistoryEntry(
                seq=r.seq,
                change_id=r.change_id,
                replica=r.replica_id,
                n=r.n,
                user=r.user,
                hlc=r.hlc,
                context=r.context,
                created_at=iso(r.created_at),
                ops=msgspec.to_builtins(
                    payloads.open_ops(cipher, r.collection, r.entity_id, r.seq, r.key_version, r.payload)
                ),
                result="applied",
                conflicts=by_seq.get(r.seq, []),
            )
            for r in rows
        ]
        letters = await self.store.find_dead_letters(
            who.tenant, None, 100, DeadLetterQuery(collection=collection, entity_id=entity)
        )
        rejected = [self._letter_view(cipher, d, with_change=True) for d in letters]
        current = await self.store.get_entity(who.tenant, collection, entity)
        if not entries and not rejected and current is None:
            raise ApiError(404, errors.NOT_FOUND, f"no entity {collection}/{entity}")
        return EntityHistory(
            collection=collection,
            entity=entity,
            changes=entries,
            rejected=rejected,
            current=self.pull_service.view(cipher, current) if current is not None else None,
            next=rows[-1].seq if more else None,
        )

    # --- dead letters ------------------------------------------------------------

    async def list_dead_letters(
        self, who: Principal, query: DeadLetterQuery, before: str | None, limit: int
    ) -> DeadLetterPage:
        cipher = await self.ciphers.cipher(who.tenant)
        start = parse_dead_letter_cursor(before) if before else None
        rows = await self.store.find_dead_letters(who.tenant, start, limit + 1, query)
        page = [self._letter_view(cipher, d, with_change=False) for d in rows[:limit]]
        return DeadLetterPage(page, _cursor_of(rows[limit - 1]) if len(rows) > limit else None)

    async def get_dead_letter(self, who: Principal, replica: str, n: int) -> DeadLetterView:
        letter = await self._letter(who, replica, n)
        return self._letter_view(await self.ciphers.cipher(who.tenant), letter, with_change=True)

    async def replay(self, who: Principal, replica: str, n: int) -> ReplayResult:
        """Apply a dead letter's change now, as a fresh server change; at most once (see module docs)."""
        letter = await self._letter(who, replica, n)
        if letter.status == "discarded":
            raise ApiError(409, errors.INVALID_REQUEST, "this dead letter was discarded; it cannot be replayed")
        cipher = await self.ciphers.cipher(who.tenant)
        raw = payloads.open_dead_letter(
            cipher, letter.replica_id, letter.n, letter.change_id, letter.key_version, letter.payload
        )
        original = msgspec.convert(raw, Change)
        context = dict(original.context)
        # The device had seen its own earlier changes; the replay replica must say so explicitly.
        context[letter.replica_id] = max(context.get(letter.replica_id, 0), letter.n - 1)
        via = replay_replica(who.tenant, letter)
        target = dead_letter_id(letter.replica_id, letter.n)

        def make(m: int) -> Change:
            change_id = "replay-" + str(uuid.uuid5(_NAMESPACE, f"{who.tenant}/{via}/{m}"))
            return Change(change_id, m, original.collection, original.entity, original.hlc, context, original.ops)

        outcome: Literal["applied", "already_replayed"] = "already_replayed"
        done = await self._applied_replay(who.tenant, via)
        if done is None:
            author = Principal(who.tenant, letter.user, "admin", who.channels)
            result = await self._push_server(author, via, make)
            if isinstance(result, Rejected):
                await self._audit(who, "dead_letter.replay_failed", target, {"code": result.error.code})
                view = self._letter_view(cipher, letter, with_change=False)
                return ReplayResult("rejected", view, error=ErrorBody(result.error.code, result.error.message))
            if isinstance(result, Applied):
                done, outcome = ServerChange(result.id, via, result.n, result.seq), "applied"
            else:  # duplicate: a concurrent replay pushed this very change first
                done = await self._applied_replay(who.tenant, via)
                if done is None:
                    raise ApiError(409, errors.INVALID_REQUEST, "a replay of this dead letter is in progress")
        if await self.store.set_dead_letter_status(who.tenant, letter.replica_id, letter.n, "open", "replayed"):
            await self._audit(who, "dead_letter.replay", target, {"seq": done.seq, "replica": via, "n": done.n})
        view = await self.get_dead_letter(who, replica, n)
        return ReplayResult(outcome, view, change=done)

    async def discard(self, who: Principal, replica: str, n: int) -> DeadLetterView:
        """Mark an open dead letter as discarded: it stays for the record and can no longer be replayed."""
        letter = await self._letter(who, replica, n)
        if not await self.store.set_dead_letter_status(who.tenant, replica, n, "open", "discarded"):
            current = await self._letter(who, replica, n)
            raise ApiError(
                409, errors.INVALID_REQUEST, f"only open dead letters can be discarded; this one is {current.status}"
            )
        await self._audit(who, "dead_letter.discard", dead_letter_id(replica, n), {"code": letter.code})
        return await self.get_dead_letter(who, replica, n)

    async def _letter(self, who: Principal, replica: str, n: int) -> DeadLetterRecord:
        letter = await self.store.get_dead_letter(who.tenant, replica, n)
        if letter is None:
            raise ApiError(404, errors.NOT_FOUND, f"no dead letter {dead_letter_id(replica, n)}")
        return letter

    async def _applied_replay(self, tenant: str, via: str) -> ServerChange | None:
        """The replay replica's last change, if it was applied (an earlier replay went through)."""
        known = await self.store.get_replica(tenant, via)
        if known is None:
            return None
        change = await self.store.change_at(tenant, via, known.hwm)
        return ServerChange(change.change_id, via, change.n, change.seq) if change is not None else None

    @staticmethod
    def _letter_view(cipher: TenantCipher, d: DeadLetterRecord, *, with_change: bool) -> DeadLetterView:
        view = DeadLetterView(
            id=dead_letter_id(d.replica_id, d.n),
            replica=d.replica_id,
            n=d.n,
            change_id=d.change_id,
            user=d.user,
            collection=d.collection,
            entity=d.entity_id,
            code=d.code,
            message=d.message,
            created_at=iso(d.created_at),
            status=d.status,
        )
        if with_change:
            view.change = payloads.open_dead_letter(cipher, d.replica_id, d.n, d.change_id, d.key_version, d.payload)
        return view

    # --- server changes and audit ------------------------------------------------

    async def _push_server(
        self,
        actor: Principal,
        replica: str,
        make: Callable[[int], Change],
    ) -> PushResult:
        """Push one change from a server replica as its next counter; retry when another push took it.

        Returns ``applied``, ``rejected`` or ``duplicate`` (the same change id was pushed by someone else).
        """
        for _ in range(PUSH_ATTEMPTS):
            known = await self.store.get_replica(actor.tenant, replica)
            n = (known.hwm if known is not None else 0) + 1
            response = await self.push_service.push(actor, PushRequest(replica, [make(n)]), server_side=True)
            result = response.results[0]
            if isinstance(result, OutOfOrder) or (
                isinstance(result, Rejected) and result.error.code == errors.N_REUSED
            ):
                continue  # another action took counter n first
            if isinstance(result, Rejected):
                # Kept as a dead letter by the push path; it is the admin's failed attempt, not a device's.
                if await self.store.set_dead_letter_status(actor.tenant, replica, n, "open", "discarded"):
                    await self._audit(actor, "dead_letter.discard", dead_letter_id(replica, n), {"auto": True})
                return result
            return result
        raise ApiError(503, errors.UNAVAILABLE, "the server replica is busy; try again")

    async def _audit(self, who: Principal, action: str, target: str, details: dict[str, Any]) -> None:
        entry = AuditRecord(0, who.tenant, who.sub, action, target, msgspec.json.encode(details).decode(), self.clock())
        await self.store.append_audit(entry)

    async def audit(self, who: Principal, target: str | None, before: int | None, limit: int) -> AuditPage:
        rows = await self.store.audit_log(who.tenant, before, limit + 1, target)
        entries = [
            AuditEntry(e.id, e.actor, e.action, e.target, msgspec.json.decode(e.details), iso(e.created_at))
            for e in rows[:limit]
        ]
        return AuditPage(entries, rows[limit - 1].id if len(rows) > limit else None)

    async def record_sign_in(self, who: Principal) -> None:
        await self._audit(who, "admin.sign_in", "web", {})


def _has_writer(view: AdminConflict, filters: ConflictFilters) -> bool:
    writers = [*view.values, *([view.winner] if view.winner is not None else [])]
    if filters.replica is not None and not any(v.replica == filters.replica for v in writers):
        return False
    return filters.user is None or any(v.user == filters.user for v in writers)


def _override_ops(view: AdminConflict, choice: OverrideRequest) -> list[Op]:
    """The ops that carry an admin's choice, or a 422 explaining what this conflict accepts."""
    if not view.overridable:
        raise ApiError(409, errors.INVALID_REQUEST, f"a {view.kind} conflict records a fact; it cannot be overridden")
    picked = choice.pick is not None
    if picked == (choice.value is not msgspec.UNSET):
        raise ApiError(422, errors.INVALID_REQUEST, "give exactly one of 'pick' (a value's index) or 'value'")
    if choice.pick is not None and not 0 <= choice.pick < len(view.values):
        raise ApiError(422, errors.INVALID_REQUEST, f"'pick' must be between 0 and {len(view.values) - 1}")
    if view.kind == "register":
        assert view.field is not None
        if choice.field not in (None, view.field):
            raise ApiError(422, errors.INVALID_REQUEST, f"this conflict is about field '{view.field}'")
        value = view.values[choice.pick].value if choice.pick is not None else choice.value
        return [SetOp(view.field, value)]
    # delete_update: values[0] is the delete, the others are the concurrent updates.
    if choice.pick == 0:
        return [DeleteOp()]
    if choice.pick is not None or choice.field is None:
        raise ApiError(422, errors.INVALID_REQUEST, "to keep the entity, write a field: {'field': ..., 'value': ...}")
    return [SetOp(choice.field, choice.value)]
