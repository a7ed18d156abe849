"""Conflicts for admins: the conflict log with filters, one conflict with its current state, and overrides.

An override is a server change from the admin's own replica whose context is
the entity's whole version vector (see ``server_changes``).
"""

from __future__ import annotations

import hashlib
import re
import uuid

import msgspec

from syncproto import errors
from syncproto.hlc import iso
from syncproto.messages import SERVER_REPLICA_PREFIX, Applied, Change, DeleteOp, FieldView, Op, Rejected, SetOp
from syncserver.admin.audit import AuditLog, Clock, now_ms
from syncserver.admin.server_changes import ServerChanges
from syncserver.admin.store import AdminBackend
from syncserver.admin.views import (
    AdminConflict,
    AdminConflictPage,
    OverrideInfo,
    OverrideRequest,
    OverrideResult,
    ServerChange,
    conflict_key,
)
from syncserver.auth.tokens import Principal
from syncserver.errors import ApiError
from syncserver.keys.keyring import Ciphers, TenantCipher
from syncserver.sync.conflicts import ConflictService, conflict_id
from syncserver.sync.pull import PullService
from syncstore.adminstore import ConflictOverride, ConflictQuery
from syncstore.records import ConflictRecord

SCAN_CHUNK = 200
SCAN_BUDGET = 5000
"""Conflicts examined per page at most when filtering by replica or user (those live in ciphertext)."""
_ID = re.compile(r"^[A-Za-z0-9._:@\-]{1,100}$")


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


class ConflictAdmin:
    """The conflict log and overrides for one principal's tenant. Callers check the admin role."""

    def __init__(
        self,
        store: AdminBackend,
        ciphers: Ciphers,
        pull: PullService,
        server_changes: ServerChanges,
        audit: AuditLog,
        clock: Clock = now_ms,
    ) -> None:
        self.store = store
        self.ciphers = ciphers
        self.pull_service = pull
        self.server_changes = server_changes
        self.audit = audit
        self.clock = clock

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
        cursor = conflict_key(after) if after else None
        scanning = filters.replica is not None or filters.user is not None
        chunk = SCAN_CHUNK if scanning else limit + 1
        found: list[AdminConflict] = []
        unavailable: list[str] = []  # rows that fail their integrity check are named, not fatal
        examined = 0

        def page(nxt: str | None) -> AdminConflictPage:
            result = AdminConflictPage(found, nxt)
            if unavailable:
                result.unavailable = unavailable
            return result

        while True:
            rows = await self.store.find_conflicts(who.tenant, cursor, chunk, query)
            for i, row in enumerate(rows):
                view = self._view(cipher, row)
                if view is None:
                    unavailable.append(conflict_id(row.seq, row.idx))
                    cursor, examined = (row.seq, row.idx), examined + 1
                    continue
                if not _has_writer(view, filters):
                    cursor, examined = (row.seq, row.idx), examined + 1
                    continue
                if len(found) == limit:  # one more match exists: there is a next page
                    return page(found[-1].id)
                found.append(view)
                cursor, examined = (row.seq, row.idx), examined + 1
                if not scanning and len(found) == limit and i == len(rows) - 1:
                    return page(None)
            if len(rows) < chunk:
                return page(None)
            if examined >= SCAN_BUDGET:
                assert cursor is not None
                return page(conflict_id(*cursor))

    async def get_conflict(self, who: Principal, conflict: str) -> AdminConflict:
        """One conflict, decrypted, with its override (if any) and the field's current state."""
        row = await self._conflict_row(who, conflict)
        cipher = await self.ciphers.cipher(who.tenant)
        view = self._opened(cipher, row)
        override = await self.store.conflict_override(who.tenant, row.seq, row.idx)
        if override is not None:
            view.override = OverrideInfo(override.actor, iso(override.created_at), override.change_seq)
        if row.field is not None:
            entity = await self.store.get_entity(who.tenant, row.collection, row.entity_id)
            if entity is not None:
                # An entity state that fails its check leaves ``current`` out; the conflict itself is intact.
                views, _ = self.pull_service.views(cipher, [(entity, 0)])
                if views:
                    view.current = views[0].fields.get(row.field, FieldView(kind="register", value=None))
        return view

    async def override(self, who: Principal, conflict: str, choice: OverrideRequest) -> OverrideResult:
        """Write the admin's choice as a server change whose context covers every sibling."""
        row = await self._conflict_row(who, conflict)
        view = self._opened(await self.ciphers.cipher(who.tenant), row)
        ops = _override_ops(view, choice)
        entity = await self.store.get_entity(who.tenant, row.collection, row.entity_id)
        context = dict(entity.vv) if entity is not None else {}
        stamp = (self.clock(), 0)

        def make(n: int) -> Change:
            return Change(str(uuid.uuid4()), n, row.collection, row.entity_id, stamp, context, ops)

        replica = admin_replica(who.sub)
        actor = Principal(who.tenant, who.sub, "admin", who.channels)
        result = await self.server_changes.push(actor, replica, make)
        if isinstance(result, Rejected):
            raise ApiError(422, result.error.code, f"the override was rejected: {result.error.message}")
        if not isinstance(result, Applied):
            raise ApiError(503, errors.UNAVAILABLE, "the override could not be applied; try again")
        now = self.clock()
        await self.store.record_override(who.tenant, ConflictOverride(row.seq, row.idx, who.sub, result.seq, now))
        pick = "value" if choice.pick is None else f"pick:{choice.pick}"
        await self.audit.record(
            who, "conflict.override", conflict, {"choice": pick, "seq": result.seq, "replica": replica}
        )
        return OverrideResult(
            await self.get_conflict(who, conflict), ServerChange(result.id, replica, result.n, result.seq)
        )

    async def _conflict_row(self, who: Principal, conflict: str) -> ConflictRecord:
        seq, idx = conflict_key(conflict)
        row = await self.store.get_conflict(who.tenant, seq, idx)
        if row is None:
            raise ApiError(404, errors.NOT_FOUND, f"no conflict {conflict}")
        return row

    @staticmethod
    def _view(cipher: TenantCipher, row: ConflictRecord) -> AdminConflict | None:
        """The API's view of the conflict (``ConflictService.view``, the one place it is built), for an admin;
        None when its stored record fails its integrity check (logged and counted)."""
        view = ConflictService.view_or_none(cipher, row)
        if view is None:
            return None
        return AdminConflict(**msgspec.structs.asdict(view), overridable=row.kind in ("register", "delete_update"))

    @staticmethod
    def _opened(cipher: TenantCipher, row: ConflictRecord) -> AdminConflict:
        """``_view`` of one conflict asked for by id: a record that fails its check is ``data_integrity``."""
        view = ConflictAdmin._view(cipher, row)
        if view is None:
            raise ApiError(500, errors.DATA_INTEGRITY, "the conflict's stored record failed its integrity check")
        return view


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
