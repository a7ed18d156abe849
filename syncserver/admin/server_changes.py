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
  change id is derived from the dead letter and the counter, and it is pushed
  with ``push_at`` at the counter right after the one the replay checked (never
  a counter it has not looked at), so a retried or concurrent replay is answered
  ``duplicate`` by the push path: a dead letter is applied at most once (see
  docs/adr/0005-admin-server-changes.md and ``DeadLetterAdmin.replay``).
"""

from __future__ import annotations

from collections.abc import Callable

from syncproto import errors
from syncproto.messages import Change, Duplicate, OutOfOrder, PushRequest, PushResult, Rejected
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

        Returns ``applied`` or ``rejected``; ``make`` must give each call a new change id (an override), since a
        ``duplicate`` is taken for another push that took the counter first.
        """
        for _ in range(PUSH_ATTEMPTS):
            known = await self.store.get_replica(actor.tenant, replica)
            n = (known.hwm if known is not None else 0) + 1
            result = await self.push_at(actor, replica, make(n))
            if not taken(result):
                return result
        raise ApiError(503, errors.UNAVAILABLE, "the server replica is busy; try again")

    async def push_at(self, actor: Principal, replica: str, change: Change) -> PushResult:
        """Push ``change`` at its own counter, once: ``applied``, ``rejected``, or ``taken`` (see ``taken``).

        A rejected change is kept as a dead letter by the push path; it is the admin's failed attempt, not a
        device's, so it is discarded at once (and audited, with the status change).
        """
        response = await self.push_service.push(actor, PushRequest(replica, [change]), server_side=True)
        result = response.results[0]
        if isinstance(result, Rejected) and not taken(result):
            target = dead_letter_id(replica, change.n)
            entry = self.audit.entry(actor, "dead_letter.discard", target, {"auto": True})
            await self.store.set_dead_letter_status(actor.tenant, replica, change.n, "open", "discarded", audit=entry)
        return result


def taken(result: PushResult) -> bool:
    """Whether another push took the counter first: ``duplicate`` (the same change id: the same server change),
    ``out_of_order`` or a reused counter (another change)."""
    return isinstance(result, Duplicate | OutOfOrder) or (
        isinstance(result, Rejected) and result.error.code == errors.N_REUSED
    )
