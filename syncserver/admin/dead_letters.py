"""Dead letters for admins: rejected changes, listed, shown decrypted, replayed at most once, or discarded.

A replay is a server change from a replica of its own per dead letter, with the
original user, stamp and context (see ``server_changes``).
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Literal

import msgspec

from syncproto import errors
from syncproto.hlc import iso
from syncproto.messages import SERVER_REPLICA_PREFIX, Applied, Change, ErrorBody, Rejected
from syncserver.admin.audit import AuditLog
from syncserver.admin.server_changes import PUSH_ATTEMPTS, ServerChanges, dead_letter_id, taken
from syncserver.admin.store import AdminBackend
from syncserver.admin.views import (
    DeadLetterPage,
    DeadLetterView,
    ReplayResult,
    ServerChange,
    counter,
    dead_letter_cursor,
)
from syncserver.auth.tokens import Principal
from syncserver.errors import ApiError
from syncserver.keys.keyring import Ciphers, TenantCipher
from syncserver.sync import payloads
from syncstore.adminstore import DeadLetterKey, DeadLetterQuery
from syncstore.records import DeadLetterRecord

_NAMESPACE = uuid.UUID("6f1d3a52-2f0e-4d7e-9a43-6b0f7c2a9e10")


def replay_replica(tenant: str, letter: DeadLetterRecord) -> str:
    """The server replica that replays one dead letter (one per letter: replays are idempotent by dot)."""
    digest = hashlib.sha256(f"{tenant}/{letter.replica_id}/{letter.n}/{letter.change_id}".encode()).hexdigest()
    return f"{SERVER_REPLICA_PREFIX}replay:{digest[:24]}"


def _cursor_of(letter: DeadLetterRecord) -> str:
    return f"{letter.created_at}:{letter.n}:{letter.replica_id}"


def parse_dead_letter_cursor(value: str) -> DeadLetterKey:
    """A page's ``next`` as its key; 400 if it is not one, or holds a number out of the store's range."""
    return dead_letter_cursor(value)


def letter_view(cipher: TenantCipher, d: DeadLetterRecord, *, with_change: bool) -> DeadLetterView:
    """The admin's view of a dead letter; ``with_change`` decrypts the change as it was pushed."""
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


class DeadLetterAdmin:
    """Dead letters of one principal's tenant. Callers check the admin role."""

    def __init__(self, store: AdminBackend, ciphers: Ciphers, server_changes: ServerChanges, audit: AuditLog) -> None:
        self.store = store
        self.ciphers = ciphers
        self.server_changes = server_changes
        self.audit = audit

    async def list_dead_letters(
        self, who: Principal, query: DeadLetterQuery, before: str | None, limit: int
    ) -> DeadLetterPage:
        """Newest first; ``before`` is the previous page's ``next``."""
        cipher = await self.ciphers.cipher(who.tenant)
        start = parse_dead_letter_cursor(before) if before else None
        rows = await self.store.find_dead_letters(who.tenant, start, limit + 1, query)
        page = [letter_view(cipher, d, with_change=False) for d in rows[:limit]]
        return DeadLetterPage(page, _cursor_of(rows[limit - 1]) if len(rows) > limit else None)

    async def get_dead_letter(self, who: Principal, replica: str, n: int) -> DeadLetterView:
        letter = await self._letter(who, replica, n)
        return letter_view(await self.ciphers.cipher(who.tenant), letter, with_change=True)

    async def replay(self, who: Principal, replica: str, n: int) -> ReplayResult:
        """Apply a dead letter's change now, as a fresh server change; at most once, audited once.

        The letter's replay replica (``replay_replica``) holds its failed attempts (each rejected, so never
        applied) and at most one applied change, its last. Each round reads the replica's high-water mark
        ``h``: an applied change at ``h`` is the earlier replay (``already_replayed``); else the change is
        pushed at ``h + 1`` and nowhere else. If another replay (another request, another server) took
        ``h + 1`` meanwhile, the push path answers ``duplicate`` and the next round finds what it did: two
        replays can never both be applied, whatever they read. The letter becomes ``replayed`` by a
        compare-and-set that carries the ``dead_letter.replay`` audit entry, so exactly one request writes it,
        also when the one that applied stopped before marking the letter (the next replay marks it).
        """
        letter = await self._letter(who, replica, n)
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
        author = Principal(who.tenant, letter.user, "admin", who.channels)

        def make(m: int) -> Change:
            change_id = "replay-" + str(uuid.uuid5(_NAMESPACE, f"{who.tenant}/{via}/{m}"))
            return Change(change_id, m, original.collection, original.entity, original.hlc, context, original.ops)

        outcome: Literal["applied", "already_replayed"] = "already_replayed"
        for _ in range(PUSH_ATTEMPTS):
            hwm, done = await self._last_replay(who.tenant, via)
            if done is not None:
                break
            if letter.status == "discarded":
                raise ApiError(409, errors.INVALID_REQUEST, "this dead letter was discarded; it cannot be replayed")
            result = await self.server_changes.push_at(author, via, make(hwm + 1))
            if isinstance(result, Applied):
                done, outcome = ServerChange(result.id, via, result.n, result.seq), "applied"
                break
            if isinstance(result, Rejected) and not taken(result):
                await self.audit.record(who, "dead_letter.replay_failed", target, {"code": result.error.code})
                view = letter_view(cipher, letter, with_change=False)
                return ReplayResult("rejected", view, error=ErrorBody(result.error.code, result.error.message))
            # taken: another replay pushed at hwm + 1 first; the next round reads what it did
        else:
            raise ApiError(409, errors.INVALID_REQUEST, "a replay of this dead letter is in progress; try again")
        await self._mark_replayed(who, letter, target, done)
        view = await self.get_dead_letter(who, replica, n)
        return ReplayResult(outcome, view, change=done)

    async def _mark_replayed(self, who: Principal, letter: DeadLetterRecord, target: str, done: ServerChange) -> None:
        """The letter's status becomes ``replayed``, with its one audit entry, unless another request did it.

        From ``discarded`` too: a discard that won the letter while its replay was being applied (or after a
        replay applied it and stopped before marking it) lost to a fact: the change is in the log.
        """
        details = {"seq": done.seq, "replica": done.replica, "n": done.n}
        for expected in ("open", "discarded"):
            entry = self.audit.entry(who, "dead_letter.replay", target, details)
            if await self.store.set_dead_letter_status(
                who.tenant, letter.replica_id, letter.n, expected, "replayed", audit=entry
            ):
                return

    async def discard(self, who: Principal, replica: str, n: int) -> DeadLetterView:
        """Mark an open dead letter as discarded: it stays for the record and can no longer be replayed."""
        letter = await self._letter(who, replica, n)
        entry = self.audit.entry(who, "dead_letter.discard", dead_letter_id(replica, n), {"code": letter.code})
        if not await self.store.set_dead_letter_status(who.tenant, replica, n, "open", "discarded", audit=entry):
            current = await self._letter(who, replica, n)
            raise ApiError(
                409, errors.INVALID_REQUEST, f"only open dead letters can be discarded; this one is {current.status}"
            )
        return await self.get_dead_letter(who, replica, n)

    async def _letter(self, who: Principal, replica: str, n: int) -> DeadLetterRecord:
        letter = await self.store.get_dead_letter(who.tenant, replica, counter(n))
        if letter is None:
            raise ApiError(404, errors.NOT_FOUND, f"no dead letter {dead_letter_id(replica, n)}")
        return letter

    async def _last_replay(self, tenant: str, via: str) -> tuple[int, ServerChange | None]:
        """The replay replica's high-water mark, and its change there if that one was applied (a replay went
        through; a failed attempt is a dead letter, not a change)."""
        known = await self.store.get_replica(tenant, via)
        if known is None or known.hwm == 0:
            return 0, None
        change = await self.store.change_at(tenant, via, known.hwm)
        return known.hwm, ServerChange(change.change_id, via, change.n, change.seq) if change is not None else None
