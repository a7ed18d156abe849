"""The ``AdminStore`` interface: what admin tools read and write beside the sync path.

Kept apart from ``Store`` (``store.py``) so the push/pull contract stays small.
``SqlStore`` and ``MemoryStore`` implement both, through their parts ``SqlAdmin``
(``sql_admin.py``) and ``MemoryAdmin`` (``memory_admin.py``); ``FaultyStore`` forwards them.

Every method is scoped to one tenant, except the audit log, whose rows outlive
tenants. Like ``Store``, an ``AdminStore`` never sees plaintext: conflict
details, dead-letter payloads and change payloads stay ciphertext, and audit
``details`` must hold metadata only (ids, seqs, codes), never a field value.

Usage::

    rows = await store.find_conflicts("acme", None, 50, ConflictQuery(entity_id="dlv-123", status="open"))
    await store.record_override("acme", ConflictOverride(rows[0].seq, rows[0].idx, "ops@acme", 42, now_ms))
    await store.append_audit(AuditRecord(0, "acme", "ops@acme", "conflict.override", "c17.0", "{}", now_ms))

Pitfalls:

* Status changes are compare-and-set (``set_dead_letter_status``): two admins
  acting at once cannot both replay or discard one dead letter. The winner's
  audit entry goes with the status change (``audit=``), in one transaction.
* Keyset pagination: pass the last row's key back as ``after``/``before``. A
  filter never changes the order, so pages never skip or repeat rows.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from msgspec import Struct

from syncstore.records import ChangeRecord, ConflictRecord, DeadLetterRecord, ReplicaRecord

DeadLetterKey = tuple[int, str, int]
"""``(created_at, replica_id, n)``: the dead-letter list's sort key, newest first."""


class ConflictQuery(Struct, frozen=True, gc=False):
    """Filters on conflict metadata; ``None`` matches anything. Times are ms, ``since`` inclusive."""

    collection: str | None = None
    entity_id: str | None = None
    field: str | None = None
    kind: str | None = None
    status: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None


class DeadLetterQuery(Struct, frozen=True, gc=False):
    """Filters on dead-letter metadata; ``None`` matches anything. Times are ms, ``since`` inclusive."""

    status: str | None = None
    code: str | None = None
    replica_id: str | None = None
    user: str | None = None
    collection: str | None = None
    entity_id: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None


class ConflictOverride(Struct, frozen=True, gc=False):
    """An admin's override of a conflict: who, when, and the change that carried it."""

    seq: int
    idx: int
    actor: str
    change_seq: int
    """The seq of the server change that wrote the admin's choice."""
    created_at: int


class AuditRecord(Struct, frozen=True, gc=False):
    """One admin action. ``id`` is assigned by the store (pass 0)."""

    id: int
    tenant_id: str | None
    actor: str
    action: str
    """A dotted verb such as ``conflict.override`` or ``dead_letter.replay``."""
    target: str
    """What was acted on, e.g. a conflict id ``c17.0`` or a dead letter ``phone-7/12``."""
    details: str
    """JSON text with metadata only (never a field value: this column is plaintext)."""
    created_at: int


@runtime_checkable
class AdminStore(Protocol):
    """Reads and status changes for admin tools. See the module docs."""

    async def find_conflicts(
        self, tenant_id: str, after: tuple[int, int] | None, limit: int, query: ConflictQuery
    ) -> list[ConflictRecord]:
        """Conflicts matching ``query`` ordered by ``(seq, idx)``, strictly after ``after``."""
        ...

    async def record_override(self, tenant_id: str, override: ConflictOverride) -> bool:
        """Set the conflict's status to ``overridden`` and store (or replace) its override.

        Returns ``False`` (and writes nothing) if the conflict does not exist.
        """
        ...

    async def conflict_override(self, tenant_id: str, seq: int, idx: int) -> ConflictOverride | None:
        """The latest override of a conflict, if any."""
        ...

    async def find_dead_letters(
        self, tenant_id: str, before: DeadLetterKey | None, limit: int, query: DeadLetterQuery
    ) -> list[DeadLetterRecord]:
        """Dead letters matching ``query``, newest first by ``(created_at, replica_id, n)``, strictly before ``before``.

        Pitfall: on PostgreSQL the replica tie-break follows the database collation.
        """
        ...

    async def get_dead_letter(self, tenant_id: str, replica_id: str, n: int) -> DeadLetterRecord | None: ...

    async def set_dead_letter_status(
        self, tenant_id: str, replica_id: str, n: int, expected: str, status: str, audit: AuditRecord | None = None
    ) -> bool:
        """Compare-and-set: change the status only if it is ``expected`` now. Returns whether it changed.

        ``audit``: appended (its ``id`` ignored) in the same transaction, only when the status changed, so of
        several callers racing for one letter exactly one writes its entry, and none is lost to a crash between
        the two writes.
        """
        ...

    async def change_at(self, tenant_id: str, replica_id: str, n: int) -> ChangeRecord | None:
        """The applied change with dot ``(replica_id, n)``, if any (uses the dot's unique index)."""
        ...

    async def get_replica(self, tenant_id: str, replica_id: str) -> ReplicaRecord | None:
        """A replica's owner and high-water mark, read without taking the tenant lock."""
        ...

    async def append_audit(self, entry: AuditRecord) -> int:
        """Append an audit entry (its ``id`` is ignored); returns the assigned id, increasing."""
        ...

    async def audit_log(
        self, tenant_id: str | None, before_id: int | None, limit: int, target: str | None = None
    ) -> list[AuditRecord]:
        """Audit entries of a tenant (``None``: entries about no tenant), newest first, ``id < before_id``."""
        ...
