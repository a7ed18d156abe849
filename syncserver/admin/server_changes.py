"""Server changes: what an admin writes (an override, a replay) goes through the push path like a device's.

An override or a replay is a change like any other, pushed through
``PushService`` so it is merged, logged, encrypted and fanned out by the same
code as a device's:

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

from collections.abc import Callable

from syncproto import errors
from syncproto.messages import Change, OutOfOrder, PushRequest, PushResult, Rejected
from syncserver.admin.audit import AuditLog
from syncserver.admin.store import AdminBackend
from syncserver.auth.tokens import Principal
from syncserver.errors import ApiError
from syncserver.sync.push import PushService

PUSH_ATTEMPTS = 5


def dead_letter_id(replica: str, n: int) -> str:
    """How admins name a dead letter: ``replica/n`` (its dot)."""
    return f"{replica}/{n}"


class ServerChanges:
    """Pushes one change from a server replica as that replica's next counter."""

    def __init__(self, store: AdminBackend, push: PushService, audit: AuditLog) -> None:
        self.store = store
        self.push_service = push
        self.audit = audit

    async def push(self, actor: Principal, replica: str, make: Callable[[int], Change]) -> PushResult:
        """Push ``make(n)`` with ``n`` the replica's next counter; retry when another push took it.

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
                    await self.audit.record(actor, "dead_letter.discard", dead_letter_id(replica, n), {"auto": True})
                return result
            return result
        raise ApiError(503, errors.UNAVAILABLE, "the server replica is busy; try again")
