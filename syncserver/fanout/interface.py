"""The fan-out interface: "tenant T has committed up to seq N", carried between server processes.

A notification is a hint, never data: subscribers read the changes from the log
(``PullService``), so a lost or duplicated notification only delays a change.
Ordering, paging and backpressure live above this interface, in
``syncserver.live``; backends only move ``(tenant, seq)`` pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class FanoutListener(Protocol):
    """What a backend calls. Both methods run on the event loop and MUST NOT block or raise."""

    def changed(self, tenant: str, seq: int) -> None:
        """``tenant`` committed everything up to ``seq``. May arrive late, twice, or out of order."""
        ...

    def resync(self) -> None:
        """Notifications may have been lost (the backend reconnected): re-read every tenant's head."""
        ...


class Fanout(Protocol):
    """Publishes commit notifications to every server process, this one included.

    Usage::

        fanout = MemoryFanout()            # or RedisFanout("redis://...", key_prefix="sync:")
        await fanout.start()
        unsubscribe = fanout.subscribe(listener)
        await fanout.publish("acme", 42)   # listener.changed("acme", 42), here and elsewhere
        unsubscribe()
        await fanout.stop()
    """

    async def start(self) -> None:
        """Connect and start delivering. MUST succeed even if a remote broker is down (it retries)."""
        ...

    async def stop(self) -> None:
        """Stop delivering and release every connection. Idempotent."""
        ...

    async def publish(self, tenant: str, seq: int) -> None:
        """Announce a commit. Local listeners are called before this returns, whatever the broker's state;
        remote delivery is best effort and MUST NOT make the caller (a push) wait for a broker."""
        ...

    def subscribe(self, listener: FanoutListener) -> Callable[[], None]:
        """Call ``listener`` for every notification from now on; returns the function that unsubscribes."""
        ...

    def checks(self) -> dict[str, str]:
        """Readiness of the backend's dependencies, e.g. ``{"redis": "ok"}`` or ``{"redis": "down: ..."}``;
        empty when there are none. A down entry means degraded (local delivery still works), not unavailable."""
        ...
