"""Admission: how many sessions a process, a user and an unauthenticated address may hold, and the
garbage-collection policy that returns the memory of ended sessions (docs/adr/0019)."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import Counter

from syncserver.auth.tokens import Principal
from syncserver.ops import metrics
from syncserver.settings import LiveSettings

log = logging.getLogger("syncserver.live")

SERVER_GC_THRESHOLDS = (700, 10, 1000)
"""The server process's collector thresholds: full collections 100 times less often than Python's default."""
COLLECT_AFTER_SESSIONS = 1000
"""Ended sessions (or more, while more are open) between the full collections ``Admission.ended`` runs."""


def server_gc_policy() -> None:
    """The server process's garbage-collector policy (docs/adr/0011 and 0019); in-process apps keep Python's.

    A full collection walks every live object: with a thousand sessions it froze
    the process for 50-180 ms and made the whole p99 of fan-out. So objects alive
    after start-up are frozen out of every scan and full collections are rare.
    What a rare full collection leaves behind, sessions that ended in reference
    cycles, ``Admission.ended`` collects.
    """
    gc.freeze()
    gc.set_threshold(*SERVER_GC_THRESHOLDS)


class TooManyConnections(Exception):
    pass


class Admission:
    """Counts this process's sessions: open ones per user, unauthenticated ones per address, ended ones."""

    def __init__(self, settings: LiveSettings) -> None:
        self.settings = settings
        self.total = 0
        self._per_user: Counter[tuple[str, str]] = Counter()
        self._unauthenticated: Counter[str] = Counter()
        self._ended = 0
        self._collecting = False

    def admit(self, principal: Principal) -> None:
        """Count a new connection, or raise ``TooManyConnections``."""
        key = (principal.tenant, principal.sub)
        if self.total >= self.settings.max_connections:
            raise TooManyConnections(f"the server holds its maximum of {self.settings.max_connections} connections")
        if self._per_user[key] >= self.settings.max_connections_per_user:
            raise TooManyConnections(
                f"this user already holds {self.settings.max_connections_per_user} connections; close one first"
            )
        self._per_user[key] += 1
        self.total += 1
        metrics.WS_CONNECTIONS.inc()

    def release(self, principal: Principal) -> None:
        key = (principal.tenant, principal.sub)
        self._per_user[key] -= 1
        if self._per_user[key] <= 0:
            del self._per_user[key]
        self.total -= 1
        metrics.WS_CONNECTIONS.dec()

    def admit_unauthenticated(self, address: str) -> None:
        """Count a connection from ``address`` that has not authenticated yet, or raise ``TooManyConnections``.

        Call ``release_unauthenticated`` once it has authenticated or ended. An
        address with none left is forgotten, so many addresses cost nothing after.
        """
        limit = self.settings.max_unauthenticated_per_address
        if self._unauthenticated[address] >= limit:  # reading a Counter adds no key
            metrics.WS_UNAUTHENTICATED_REFUSED.inc()
            raise TooManyConnections(
                f"this address already has {limit} connections that have not authenticated; authenticate first"
            )
        self._unauthenticated[address] += 1
        metrics.WS_UNAUTHENTICATED.inc()

    def release_unauthenticated(self, address: str) -> None:
        self._unauthenticated[address] -= 1
        if self._unauthenticated[address] <= 0:
            del self._unauthenticated[address]
        metrics.WS_UNAUTHENTICATED.dec()

    def ended(self) -> None:
        """A session ended, authenticated or not: every so many, collect the reference cycles they leave.

        uvicorn's and Litestar's objects of a connection (the protocol and its
        parser, the send and receive wrappers, the ``WebSocket``) refer to each
        other, so only a full collection frees them: about 19 KiB a session.
        Under ``server_gc_policy`` full collections are rare, and without this a
        stream of short sessions (unauthenticated ones included) grew the
        process for good. The pause of a full collection grows with the open
        sessions, so it waits for as many ended sessions as are open (at least
        ``COLLECT_AFTER_SESSIONS``): its cost per ended session stays constant,
        and the garbage waiting stays below what the open sessions hold.
        """
        self._ended += 1
        if self._collecting or self._ended < max(COLLECT_AFTER_SESSIONS, self.total):
            return
        self._collecting = True
        asyncio.get_running_loop().call_soon(self._collect)  # on the next turn, not inside a session's teardown

    def _collect(self) -> None:
        started = time.perf_counter()
        found = gc.collect()
        log.debug(
            "collected %d objects left by %d ended sessions in %.1f ms",
            found,
            self._ended,
            (time.perf_counter() - started) * 1000,
        )
        self._ended = 0
        self._collecting = False
