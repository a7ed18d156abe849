"""Accepting changes: order check, merge, conflict logging, sealing, one atomic commit.

For one push the service holds the tenant's write lock (``Store.push_session``)
and, per change:

1. ``n <= hwm``: answered as it was first: ``duplicate`` if it was applied, its ``rejected`` again (the
   dead letter's code and message) if it was refused; if the id differs, a reused counter (``n_reused``);
2. ``n > hwm + 1``: out of order, with the counter the server expects;
3. otherwise the change is checked and merged; it is either applied (next seq)
   or rejected and kept as a dead letter. Both advance the high-water mark, so
   a bad change never blocks the ones behind it.

Everything the push writes is committed in one transaction, then subscribers
are notified. A crash before commit loses nothing the client was told about:
the client was told nothing, and will resend.

**Group commit.** Pushes to one tenant that arrive while its lock is held wait
in a queue; the next holder takes every waiting push (each replica at most once
per group, at most ``GROUP_MAX_CHANGES`` changes) and applies them one after
another, in arrival order, in one transaction: one lock, one commit, one fsync
for the group. Each push still gets exactly the results it would have got alone
(later pushes see earlier ones' changes, seqs are consecutive), and none is
answered before the group's commit. A push refused as a whole (a replica of
another user) fails alone; a failed commit fails the group, and every device
resends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from syncproto import errors
from syncproto.hlc import clamp
from syncproto.merge import ChangeRejected, ConflictDraft, EntityState, apply_change, check_bounds, is_deleted
from syncproto.messages import (
    SERVER_REPLICA_PREFIX,
    AddOp,
    AppendOp,
    Applied,
    Change,
    ConflictValue,
    Duplicate,
    ErrorBody,
    OutOfOrder,
    PushRequest,
    PushResponse,
    PushResult,
    Rejected,
    RemoveOp,
    SetOp,
    TextOp,
)
from syncproto.schema import Schema
from syncproto.values import MAX_VALUE_DEPTH, storable
from syncserver.auth.scopes import ChannelError, Scope, channel_fields, entity_channels
from syncserver.auth.tokens import Principal
from syncserver.errors import ApiError
from syncserver.integrity import chain, quarantine
from syncserver.keys.envelope import DecryptionError
from syncserver.keys.keyring import Ciphers, TenantCipher
from syncserver.settings import Limits
from syncserver.sync import payloads
from syncserver.sync.dictionary_trainer import DictionaryTrainer
from syncserver.sync.push_budget import PushBudget
from syncstore.integrity import IntegrityStore
from syncstore.records import (
    ChangeRecord,
    CheckpointRecord,
    ConflictRecord,
    DeadLetterRecord,
    DotRecord,
    EntityRecord,
    MembershipRecord,
    PushBatch,
    ReplicaRecord,
)
from syncstore.store import PushLoad, PushSession, Store

EntityKey = tuple[str, str]
FORBIDDEN_MESSAGE = "the entity is not, or would not be, in one of the channels of your token"
UNAVAILABLE_MESSAGE = "the entity's stored state failed its integrity check; the change is kept for replay after repair"
_msgpack = msgspec.msgpack.Encoder()

Notify = Callable[[str, int], Awaitable[None]]
Observe = Callable[[PushBatch, list[PushResult]], None]
"""Called after each commit with what was written and the results (metrics; see ``syncserver.ops.metrics``)."""


@dataclass
class _Working:
    """An entity being changed during one push."""

    stored: payloads.StoredEntity
    seq: int
    created: bool
    dirty: bool = False
    joined: dict[str, int] = field(default_factory=dict)
    """Stored channel rows it is a member of, with the seq it joined each."""
    channels: frozenset[str] = frozenset()
    """The channels it is in now, after the changes of this push so far."""
    derived: bool = False
    """Whether ``channels`` were computed from ``stored`` in this group (not taken from the stored rows)."""
    chain: bytes | None = None
    """The chain link of the change at ``seq`` (bound into the sealed state)."""


class PushService:
    def __init__(
        self,
        store: Store,
        ciphers: Ciphers,
        schema: Schema,
        limits: Limits,
        max_clock_skew_ms: int,
        notify: Notify | None = None,
        clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        observe: Observe | None = None,
    ) -> None:
        self.store = store
        self.ciphers = ciphers
        self.schema = schema
        self.limits = limits
        self.max_clock_skew_ms = max_clock_skew_ms
        self.notify = notify
        self.clock = clock
        self.observe = observe
        self.budget = PushBudget(limits.push_inflight_bytes)
        """Bounds the push bodies this process holds decoded at once (``push_budget``); the transports reserve."""
        self.dictionaries: DictionaryTrainer | None = None
        """Gives tenants their compression dictionary (set by ``build_services``; see ``dictionary_trainer``)."""
        self._queues: dict[str, list[_Waiting]] = {}
        """Pushes waiting for their tenant's next group, in arrival order."""
        self._draining: dict[str, asyncio.Task[None]] = {}
        """The task committing each tenant's groups while any push waits."""
        if not isinstance(store, IntegrityStore):
            raise TypeError(f"{type(store).__name__} must implement IntegrityStore for the change log's chain")
        self.integrity: IntegrityStore = store

    async def push(self, principal: Principal, request: PushRequest, *, server_side: bool = False) -> PushResponse:
        """Apply a replica's changes. Only ``server_side`` pushes (admin tools) may use a ``server:`` replica."""
        if request.replica.startswith(SERVER_REPLICA_PREFIX) and not server_side:
            raise ApiError(403, errors.REPLICA_FORBIDDEN, "replica ids starting with 'server:' are reserved")
        if len(request.replica) > self.limits.max_id_length:
            raise ApiError(
                422, errors.ID_TOO_LONG, f"replica ids may be at most {self.limits.max_id_length} characters"
            )
        if len(request.changes) > self.limits.max_changes_per_push:
            raise ApiError(
                413,
                errors.TOO_MANY_CHANGES,
                f"a push may carry at most {self.limits.max_changes_per_push} changes; split it",
            )
        waiting = _Waiting(principal, request, asyncio.get_running_loop().create_future())
        queue = self._queues.setdefault(principal.tenant, [])
        queue.append(waiting)
        if principal.tenant not in self._draining:
            self._draining[principal.tenant] = asyncio.create_task(
                self._drain(principal.tenant), name=f"push-group-{principal.tenant}"
            )
        return PushResponse(await asyncio.shield(waiting.done))

    async def drained(self) -> None:
        """Wait until every waiting push is committed (or failed): before the store closes."""
        while self._draining:
            await asyncio.gather(*self._draining.values(), return_exceptions=True)

    async def _drain(self, tenant: str) -> None:
        """Commit the tenant's waiting pushes, group after group, until none waits."""
        try:
            while queue := self._queues.get(tenant):
                group = _take_group(queue)
                if not queue:
                    del self._queues[tenant]
                try:
                    await self._commit_group(tenant, group)
                except BaseException as exc:  # the group's transaction is rolled back: every push of it fails
                    for waiting in group:
                        if not waiting.done.done():
                            waiting.done.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
        finally:
            del self._draining[tenant]

    async def _commit_group(self, tenant: str, group: list[_Waiting]) -> None:
        runs: list[tuple[_Waiting, _PushRun, list[PushResult]]] = []
        refused: list[tuple[_Waiting, ApiError]] = []
        try:
            await self._apply_group(tenant, group, runs, refused)
        finally:
            for waiting, exc in refused:  # answered once the lock is released, like the others
                if not waiting.done.done():
                    waiting.done.set_exception(exc)

    async def _apply_group(
        self,
        tenant: str,
        group: list[_Waiting],
        runs: list[tuple[_Waiting, _PushRun, list[PushResult]]],
        refused: list[tuple[_Waiting, ApiError]],
    ) -> None:
        cipher = await self.ciphers.cipher(tenant)
        async with self.store.push_session(tenant) as session:
            prior: _PushRun | None = None
            loaded = await session.load(
                [waiting.request.replica for waiting in group],
                list(dict.fromkeys((c.collection, c.entity) for waiting in group for c in waiting.request.changes)),
            )
            for i, waiting in enumerate(group):
                if i:
                    await asyncio.sleep(0)  # between pushes, the event loop answers other requests
                run = _PushRun(self, session, cipher, waiting.principal, waiting.request.replica, prior)
                first_conflict = len(run.conflicts)
                try:
                    results = await run.process(waiting.request.changes, loaded)
                except ApiError as exc:  # refused as a whole before it changed anything (see process)
                    refused.append((waiting, exc))
                    continue
                run.conflicts_found = (first_conflict, len(run.conflicts))
                runs.append((waiting, run, results))
                prior = run
            if prior is None:
                return
            batch = prior.batch([run for _, run, _ in runs])
            await session.commit(batch)
        for waiting, run, results in runs:
            if self.observe is not None:
                conflicts = batch.conflicts[slice(*run.conflicts_found)]
                self.observe(PushBatch(last_seq=run.seq, conflicts=conflicts), results)
            if not waiting.done.done():
                waiting.done.set_result(results)
        if self.dictionaries is not None:
            self.dictionaries.committed(tenant, prior.seq, prior.cipher)
        if self.notify is not None and any(run.applied for _, run, _ in runs):
            await self.notify(tenant, prior.seq)


class _PushRun:
    """The state of one push inside the tenant lock."""

    def __init__(
        self,
        svc: PushService,
        session: PushSession,
        cipher: TenantCipher,
        who: Principal,
        replica: str,
        prior: _PushRun | None = None,
    ) -> None:
        """A push's run; after ``prior`` (an earlier push of the same group) it goes on from where that one
        left the group's shared state: seq, chain head, working entities and the rows to write."""
        self.svc = svc
        self.session = session
        self.who = who
        self.replica = replica
        self.hwm = 0
        self.owner = who.sub
        self.ids_in_batch: dict[int, DotRecord] = {}
        """What each counter processed by this push was used for (a replay within the push is answered from it)."""
        self.applied = 0
        self.scope = Scope.of(who)
        self.conflicts_found = (0, 0)
        """Where this push's conflicts are in the group's list (for its metrics)."""
        if prior is None:
            self.cipher = cipher
            self.now = svc.clock()
            self.seq = session.last_seq
            self.head = session.chain_head or chain.genesis(who.tenant)
            self.entities: dict[EntityKey, _Working] = {}
            self.unavailable: dict[EntityKey, frozenset[str]] = {}
            self.changes: list[ChangeRecord] = []
            self.conflicts: list[ConflictRecord] = []
            self.dead: list[DeadLetterRecord] = []
        else:
            self.cipher = prior.cipher
            self.now = prior.now
            self.seq = prior.seq
            self.head = prior.head
            self.entities = prior.entities
            self.unavailable = prior.unavailable
            self.changes = prior.changes
            self.conflicts = prior.conflicts
            self.dead = prior.dead
        # self.head: the chain link at self.seq, extended by every applied change;
        # self.unavailable: entities whose stored state failed its integrity check (changes to them are rejected).

    async def process(self, changes: list[Change], loaded: PushLoad) -> list[PushResult]:
        """Each change's result. Raises ``ApiError`` only before anything changed (a replica of another user).

        ``loaded``: the group's replicas, entities and their channel rows, read in one step at its start (the
        entities of every change, duplicates' too: which are duplicates the replica row tells). An entity an
        earlier push of the group took (and maybe changed) is already here, as it is now: that one is not
        taken from ``loaded`` again. A replica has at most one push in a group, so its row is as read."""
        keys = dict.fromkeys((c.collection, c.entity) for c in changes)
        wanted = [k for k in keys if k not in self.entities and k not in self.unavailable]
        known = loaded.replicas.get(self.replica)
        if known is not None:
            if known.owner != self.who.sub:
                raise ApiError(403, errors.REPLICA_FORBIDDEN, "this replica id belongs to another user")
            self.hwm = known.hwm
        await self._take(
            {k: loaded.entities[k] for k in wanted if k in loaded.entities},
            {k: loaded.members[k] for k in wanted if k in loaded.members},
        )
        return [await self._one(c) for c in changes]

    async def _take(self, rows: dict[EntityKey, EntityRecord], members: dict[EntityKey, dict[str, int]]) -> None:
        """Open the loaded entity rows into the working set (a row that fails its check: unavailable)."""
        versions = {row.key_version for row in rows.values()}
        if not self.cipher.has(versions):
            self.cipher = await self.svc.ciphers.cipher(self.who.tenant, versions)
        for key, row in rows.items():
            try:
                stored = quarantine.open_current(self.cipher, row)
            except DecryptionError as exc:
                quarantine.failed("entities", self.who.tenant, f"{key[0]}/{key[1]}", exc)
                self.unavailable[key] = frozenset(members.get(key, {}))
                continue
            joined = members.get(key, {})
            self.entities[key] = _Working(
                stored, row.seq, False, joined=joined, channels=frozenset(joined), chain=row.chain
            )

    async def _one(self, change: Change) -> PushResult:
        if change.n <= self.hwm:
            return await self._duplicate(change)
        if change.n > self.hwm + 1:
            return OutOfOrder(change.id, change.n, self.hwm + 1)
        self.hwm = change.n
        self.ids_in_batch[change.n] = DotRecord(change.id)
        try:
            check_bounds(change)  # first: a change out of bounds may not survive encoding
            plaintext = payloads.encode_ops(change.ops)
            self._check_limits(change, len(plaintext))
            return self._apply(change, plaintext)
        except ChangeRejected as exc:
            self._dead_letter(change, exc.code, exc.message)
            self.ids_in_batch[change.n] = DotRecord(change.id, exc.code, exc.message)
            return Rejected(change.id, change.n, ErrorBody(exc.code, exc.message))

    async def _duplicate(self, change: Change) -> PushResult:
        """A counter already processed: answered as it was the first time.

        A device resends a change whose answer it did not get (a timeout, a dropped connection); if that change
        was refused, a ``duplicate`` would tell the device it was delivered, and the write would vanish with no
        rejection to show for it. So a dead-lettered counter answers its ``rejected`` again.
        """
        seen = self.ids_in_batch.get(change.n) or await self.session.dot(self.replica, change.n)
        if seen is not None and seen.change_id != change.id:
            message = f"counter {change.n} of this replica was already used by change {seen.change_id}"
            return Rejected(change.id, change.n, ErrorBody(errors.N_REUSED, message))
        if seen is not None and seen.code is not None:
            return Rejected(change.id, change.n, ErrorBody(seen.code, seen.message or ""))
        return Duplicate(change.id, change.n)

    def _check_limits(self, change: Change, ops_bytes: int) -> None:
        """Refuse a change past a limit. ``ops_bytes``: the length of ``encode_ops(change.ops)``.

        Every value is encoded inside the ops with the same msgpack encoding, so when the whole fits the
        value limit each value does, and none is encoded again only to be measured.
        """
        limits = self.svc.limits
        if len(change.ops) > limits.max_ops_per_change:
            raise ChangeRejected(errors.TOO_MANY_OPS, f"a change may carry at most {limits.max_ops_per_change} ops")
        if max(len(change.collection), len(change.entity)) > limits.max_id_length:
            raise ChangeRejected(
                errors.ID_TOO_LONG, f"collection and entity ids may be at most {limits.max_id_length} characters"
            )
        for op in change.ops:
            name_length = len(getattr(op, "field", ""))
            if name_length > limits.max_field_name_length:
                raise ChangeRejected(
                    errors.FIELD_NAME_TOO_LONG,
                    f"a field name is {name_length} characters; the limit is {limits.max_field_name_length}",
                )
            if ops_bytes <= limits.max_value_bytes:
                continue
            if isinstance(op, SetOp | AppendOp | AddOp | RemoveOp):
                size, name = len(_msgpack.encode(op.value)), op.field
            elif isinstance(op, TextOp):
                size, name = len(op.update), op.field
            else:
                continue
            if size > limits.max_value_bytes:
                raise ChangeRejected(
                    errors.VALUE_TOO_LARGE,
                    f"the value of field '{name}' is {size} bytes; the limit is {limits.max_value_bytes}",
                )

    def _apply(self, change: Change, plaintext: bytes) -> PushResult:
        key = (change.collection, change.entity)
        if key in self.unavailable:
            # Out of scope stays indistinguishable from any other entity out of scope.
            if not self.scope.allows(self.unavailable[key]):
                raise ChangeRejected(errors.FORBIDDEN, FORBIDDEN_MESSAGE)
            raise ChangeRejected(errors.DATA_INTEGRITY, UNAVAILABLE_MESSAGE)
        work = self.entities.get(key)
        if work is None:
            work = _Working(payloads.StoredEntity(EntityState()), 0, created=True)
            self.entities[key] = work
        collection = self.svc.schema.get(change.collection)
        # An existing entity must be visible to the writer before the change (see scopes.py).
        if work.stored.state.vv and not self.scope.allows(work.channels):
            raise ChangeRejected(errors.FORBIDDEN, FORBIDDEN_MESSAGE)
        stamp, clamped = clamp(change.hlc, self.now, self.svc.max_clock_skew_ms)
        outcome = apply_change(
            work.stored.state, change, self.replica, collection, hlc=stamp, user=self.who.sub, bounds_checked=True
        )
        if len(outcome.state.fields) > self.svc.limits.max_fields_per_entity:
            raise ChangeRejected(
                errors.TOO_MANY_FIELDS,
                f"an entity may have at most {self.svc.limits.max_fields_per_entity} fields",
            )
        if not (work.derived and outcome.changed.isdisjoint(channel_fields(collection.channels))):
            try:
                channels = entity_channels(collection, outcome.state)
            except ChannelError as exc:
                raise ChangeRejected(errors.INVALID_CHANGE, str(exc)) from exc
            # ... and after it: a driver cannot create or move an entity outside its own channels,
            # nor publish it into a channel its token does not hold (PROTOCOL.md §7.1).
            if not self.scope.allows(channels):
                raise ChangeRejected(errors.FORBIDDEN, FORBIDDEN_MESSAGE)
            added = self.scope.foreign(channels - work.channels)
            if added:
                raise ChangeRejected(
                    errors.FORBIDDEN, f"the change would add the entity to channels your token does not hold: {added}"
                )
            work.channels, work.derived = channels, True
        # Else the channels are those computed from the state before (no field they come from changed), and
        # the scope allowed them then: when they were derived, and above (the entity is not new).
        self.seq += 1
        seq = self.seq
        field_seq = dict(work.stored.field_seq)
        for name in outcome.changed:
            field_seq[name] = seq
        work.stored = payloads.StoredEntity(outcome.state, field_seq)
        work.seq = seq
        work.dirty = True
        context = dict(change.context)
        self.head = work.chain = chain.link_fields(
            self.head,
            (seq, change.id, change.collection, change.entity, self.replica, change.n, stamp, self.who.sub),
            context,
            self.now,
            plaintext,
        )
        version, payload = payloads.seal_ops(self.cipher, change.collection, change.entity, seq, self.head, plaintext)
        self.changes.append(
            ChangeRecord(
                seq=seq,
                change_id=change.id,
                collection=change.collection,
                entity_id=change.entity,
                replica_id=self.replica,
                n=change.n,
                hlc=stamp,
                user=self.who.sub,
                context=context,
                key_version=version,
                payload=payload,
                created_at=self.now,
                chain=self.head,
            )
        )
        drafts = list(outcome.conflicts)
        for i, draft in enumerate(drafts):
            self._conflict(change, seq, i, draft)
        if clamped:
            self._clock_skew(change, seq, len(drafts), stamp)
        self.applied += 1
        return Applied(change.id, change.n, seq)

    def _conflict(self, change: Change, seq: int, idx: int, draft: ConflictDraft) -> None:
        values = [ConflictValue(s.value, s.replica, s.n, s.user, s.hlc) for s in draft.values]
        winner = None
        if draft.winner is not None:
            w = draft.winner
            winner = ConflictValue(w.value, w.replica, w.n, w.user, w.hlc)
        body = payloads.StoredConflict(values, winner)
        self._record_conflict(change, seq, idx, draft.field, draft.kind, draft.rule, body)

    def _clock_skew(self, change: Change, seq: int, idx: int, stamp: tuple[int, int]) -> None:
        original = ConflictValue(None, self.replica, change.n, self.who.sub, change.hlc)
        used = ConflictValue(None, self.replica, change.n, self.who.sub, stamp)
        note = f"device clock {change.hlc[0] - self.now} ms ahead of the server; stamp clamped"
        body = payloads.StoredConflict([original], used, note)
        self._record_conflict(change, seq, idx, None, "clock_skew", "clamp", body)

    def _record_conflict(
        self,
        change: Change,
        seq: int,
        idx: int,
        field: str | None,
        kind: str,
        rule: str,
        body: payloads.StoredConflict,
    ) -> None:
        version, details = payloads.seal_conflict(self.cipher, change.collection, change.entity, seq, idx, body)
        self.conflicts.append(
            ConflictRecord(
                seq=seq,
                idx=idx,
                collection=change.collection,
                entity_id=change.entity,
                field=field,
                kind=kind,
                rule=rule,
                status="open",
                created_at=self.now,
                key_version=version,
                details=details,
            )
        )

    def _dead_letter(self, change: Change, code: str, message: str) -> None:
        raw = _storable(change) if code in _UNENCODABLE else msgspec.to_builtins(change)
        version, payload = payloads.seal_dead_letter(self.cipher, self.replica, change.n, change.id, raw)
        self.dead.append(
            DeadLetterRecord(
                replica_id=self.replica,
                n=change.n,
                change_id=change.id,
                user=self.who.sub,
                collection=change.collection,
                entity_id=change.entity,
                code=code,
                message=message,
                key_version=version,
                payload=payload,
                created_at=self.now,
            )
        )

    def batch(self, runs: list[_PushRun]) -> PushBatch:
        """Everything the group's ``runs`` (this one the last) write, as one batch."""
        entities = []
        memberships: list[MembershipRecord] = []
        for (collection, entity_id), work in self.entities.items():
            if not work.dirty:
                continue
            memberships += _memberships(collection, entity_id, work)
            version, blob = payloads.seal_entity(self.cipher, collection, entity_id, work.stored, work.seq, work.chain)
            deleted = is_deleted(work.stored.state, self.svc.schema.get(collection).on_delete)
            entities.append(
                EntityRecord(
                    collection=collection,
                    entity_id=entity_id,
                    seq=work.seq,
                    deleted=deleted,
                    key_version=version,
                    state=blob,
                    vv=dict(work.stored.state.vv),
                    updated_at=self.now,
                    chain=work.chain,
                )
            )
        return PushBatch(
            last_seq=self.seq,
            entities=entities,
            changes=self.changes,
            conflicts=self.conflicts,
            dead_letters=self.dead,
            replicas=[ReplicaRecord(run.replica, run.owner, run.hwm) for run in runs],
            memberships=memberships,
            chain_head=self.head if self.seq > self.session.last_seq else None,
            checkpoints=self._checkpoints(),
        )

    def _checkpoints(self) -> list[CheckpointRecord]:
        if not chain.crosses_checkpoint(self.session.last_seq, self.seq):
            return []
        return [chain.sign_checkpoint(self.cipher, self.seq, self.head, self.now)]


_UNENCODABLE = frozenset({errors.VALUE_OUT_OF_RANGE, errors.VALUE_TOO_DEEP, errors.INVALID_CHANGE})
"""Rejections whose change may hold what cannot be encoded or read back as JSON (huge integers,
deep nesting, MessagePack-only types)."""


def _storable(change: Change) -> Any:
    """The change as JSON builtins: out-of-range integers and non-JSON values as text, deep nesting cut.

    A change rejected for its bounds is still kept as a dead letter; this is what can be stored of it.
    """
    head: dict[str, Any] = msgspec.to_builtins(msgspec.structs.replace(change, ops=[]))
    head["ops"] = [
        {"op": type(op).__struct_config__.tag, **{name: getattr(op, name) for name in op.__struct_fields__}}
        for op in change.ops
    ]
    # The change, its ops list and an op are three levels above a value.
    return storable(head, MAX_VALUE_DEPTH + 4)


def _memberships(collection: str, entity_id: str, work: _Working) -> list[MembershipRecord]:
    """Channel rows after this push: joined ones keep their ``joined_seq``, left ones stay as evictions."""
    rows = [
        MembershipRecord(collection, entity_id, c, work.seq, work.joined.get(c, work.seq), True)
        for c in sorted(work.channels)
    ]
    rows += [
        MembershipRecord(collection, entity_id, c, work.seq, joined, False)
        for c, joined in sorted(work.joined.items())
        if c not in work.channels
    ]
    return rows


@dataclass
class _Waiting:
    """A push waiting for its tenant's next group."""

    principal: Principal
    request: PushRequest
    done: asyncio.Future[list[PushResult]]


GROUP_MAX_CHANGES = 5000
"""A group stops growing once it holds this many changes (at least one push always goes in)."""


def _take_group(queue: list[_Waiting]) -> list[_Waiting]:
    """Remove and return the next group: waiting pushes in arrival order, one per replica (a second push of a
    replica waits for the next group, so it sees the first one's counter), up to ``GROUP_MAX_CHANGES``."""
    group: list[_Waiting] = []
    later: list[_Waiting] = []
    replicas: set[str] = set()
    changes = 0
    for waiting in queue:
        full = bool(group) and changes + len(waiting.request.changes) > GROUP_MAX_CHANGES
        if full or waiting.request.replica in replicas:
            later.append(waiting)
            continue
        group.append(waiting)
        replicas.add(waiting.request.replica)
        changes += len(waiting.request.changes)
    queue[:] = later
    return group
