"""The audit log of admin actions: every action that changes something writes one entry.

Entries hold metadata only (ids, seqs, codes), never a value.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

from syncproto.hlc import iso
from syncserver.admin.views import AuditEntry, AuditPage, audit_before
from syncserver.auth.tokens import Principal
from syncstore.adminstore import AdminStore, AuditRecord

Clock = Callable[[], int]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class AuditLog:
    """Writes and pages the audit log of one principal's tenant."""

    def __init__(self, store: AdminStore, clock: Clock = now_ms) -> None:
        self.store = store
        self.clock = clock

    def entry(self, who: Principal, action: str, target: str, details: dict[str, Any]) -> AuditRecord:
        """The entry ``record`` appends, for a store write that appends it itself (in its own transaction)."""
        return AuditRecord(0, who.tenant, who.sub, action, target, msgspec.json.encode(details).decode(), self.clock())

    async def record(self, who: Principal, action: str, target: str, details: dict[str, Any]) -> None:
        """Append one entry: ``who`` did ``action`` to ``target`` (a conflict id, ``replica/n``, ...)."""
        await self.store.append_audit(self.entry(who, action, target, details))

    async def audit(self, who: Principal, target: str | None, before: int | None, limit: int) -> AuditPage:
        """Newest first; ``before`` is the previous page's ``next``."""
        rows = await self.store.audit_log(who.tenant, audit_before(before), limit + 1, target)
        entries = [
            AuditEntry(e.id, e.actor, e.action, e.target, msgspec.json.decode(e.details), iso(e.created_at))
            for e in rows[:limit]
        ]
        return AuditPage(entries, rows[limit - 1].id if len(rows) > limit else None)

    async def record_sign_in(self, who: Principal) -> None:
        await self.record(who, "admin.sign_in", "web", {})
