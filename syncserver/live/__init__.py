"""Live delivery for the WebSocket channel: shared per-tenant feeds, bounded per-connection queues.

How a commit reaches a subscriber:

1. ``PushService`` commits and calls ``Fanout.publish(tenant, seq)``; every
   process's ``LiveHub.changed`` hears it (this one directly, others via Redis).
2. The tenant's ``Feed`` reads the new entities from the log once (``Store.pull``
   after the last seq it read) and keeps the page in a small cache.
3. Each live ``Connection`` of the tenant is offered the page as one frame, built
   with ``PullService.view`` for the connection's cursor: exactly what an HTTP
   pull with that cursor returned at that moment. A frame is encoded once per
   (cursor, encoding) and shared by every connection at that cursor.
4. Offering never waits. A connection whose queue is full drops its queued
   change frames, is marked lagging and, once its socket has drained, catches up
   from the log from the last frame the socket took: nothing is lost. A catch-up
   already running drops what it read before the overflow and starts over from
   there; its ``synced`` waits for room rather than overflow the queue. A
   ``synced`` queued behind change frames that an overflow drops is dropped with
   them (its cursor claims them); the catch-up sends a new one.

A connection that is not live (just connected, or lagging) catches up with
``PullService.pull`` (the HTTP pull itself) and goes live when it reaches what
the feed has read.

Restricted principals (drivers, who see only their channels) never take shared
pages: a filter over a tenant-wide page can neither send evictions nor know
which entities entered the scope and must be sent whole. For them a new page
only wakes their own ``PullService.pull`` from their cursor, which does both.
The optional ``ScopeFilter`` is a further, per-entity filter on top of that.

Memory per session is returned when it ends: the hub counts unauthenticated
connections per client address (``admit_unauthenticated``), and once as many
sessions have ended as are open (at least ``COLLECT_AFTER_SESSIONS``) it runs
the full garbage collection that the server process otherwise runs rarely
(``server_gc_policy``; docs/adr/0019).

The package's parts: ``connection`` (a subscriber, its queue and frames),
``feed`` (a tenant's pages read from the log), ``hub`` (``LiveHub``: the
connections by tenant, the fan-out listener, catch-up) and ``admission``
(connection limits and the garbage-collection policy).
"""

from __future__ import annotations

from syncserver.live.admission import COLLECT_AFTER_SESSIONS, Admission, TooManyConnections, server_gc_policy
from syncserver.live.connection import Connection, Frame, ScopeFilter, encode
from syncserver.live.feed import Feed, Page
from syncserver.live.hub import LiveHub

__all__ = [
    "COLLECT_AFTER_SESSIONS",
    "Admission",
    "Connection",
    "Feed",
    "Frame",
    "LiveHub",
    "Page",
    "ScopeFilter",
    "TooManyConnections",
    "encode",
    "server_gc_policy",
]
