"""``PushBudget``: how many bytes of push bodies one server process decodes and applies at once.

When a thousand devices reconnect together, each sends its outbox at once. Decoded,
a push of 100 changes takes several times its JSON, and every push waits in its
tenant's group-commit queue until its group commits. Without a bound, the server's
memory at the peak grows with the fleet: about 0.16 MiB per device, 298 MiB for
1,000 devices and 619 MiB for 3,000 (benchmarks/README.md).

A push reserves its body's size once the body has arrived (within the body limit)
and before it is decoded. It gives the bytes back once its push has ended. Pushes
that do not fit wait their turn, in arrival order, as bytes: decoded, a push takes
several times that. Reserving only once the body is whole means a client that sends
its body slowly holds nothing but its own connection. It cannot take the budget
from everyone else. The group commit only needs a few groups' worth of pushes
queued to commit as fast as it can, so the bound costs no throughput
(``SYNC_PUSH_INFLIGHT_BYTES``; 0 turns it off).

Usage::

    budget = PushBudget(16 * 1024 * 1024)
    raw = await request.body()
    result = await budget.run(len(raw), lambda: push_service.push(principal, decode(raw)))

Pitfalls:

* The bytes are held until the push ends, not until its request does. A push
  keeps running once queued (its group commits it whether or not the client
  still waits), so a client that gives up and resends must not hand its bytes
  back early: held only around the handler's ``await``, five rounds of
  time-outs left five times the budget decoded in the queue. ``run`` holds
  them for its task, whatever happens to the caller.

* A body larger than the whole budget is admitted alone, once nothing else is
  in flight: the body limit (``SYNC_MAX_BODY_BYTES``) bounds it, not this.
* Waiting is in arrival order, so a large push is never starved by small ones.
  A push cancelled while it waits (its client went away) leaves the queue, and
  the ones behind it move up.
* Reserve after the body has arrived and before decoding it. The budget bounds
  decoded bodies. Reserving earlier would let a slow sender hold room it does
  not use.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import Counter, Gauge

INFLIGHT_BYTES = Gauge(
    "sync_push_inflight_bytes",
    "Bytes of push bodies being decoded or applied in this process.",
    multiprocess_mode="livesum",
)
WAITS = Counter("sync_push_budget_waits", "Pushes that waited for room in the push budget before being decoded.")

_T = TypeVar("_T")


class PushBudget:
    """A first-come, first-served budget of bytes for push bodies in flight. See the module docs."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        """The bound in bytes; 0 or less: no bound."""
        self.used = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def run(self, size: int, work: Callable[[], Awaitable[_T]]) -> _T:
        """``await work()`` as a task of its own, holding ``size`` bytes from before it starts until it ends.

        The caller may be cancelled (a client that went away): the task goes on and keeps the bytes until it
        ends, as the push it runs does. Its outcome is still retrieved, so a failure is not reported as lost.
        """
        if self.limit <= 0:
            return await work()
        size = max(0, min(size, self.limit))
        await self._take(size)
        try:
            task = asyncio.ensure_future(work())
        except BaseException:
            self._release(size)
            raise

        def done(finished: asyncio.Future[_T]) -> None:
            self._release(size)
            if not finished.cancelled():
                finished.exception()  # retrieved: the caller may be gone

        task.add_done_callback(done)
        return await asyncio.shield(task)

    async def _take(self, size: int) -> None:
        if self._waiting or self.used + size > self.limit:
            await self._wait(size)
        else:
            self.used += size
        INFLIGHT_BYTES.set(self.used)

    async def _wait(self, size: int) -> None:
        waiter = asyncio.get_running_loop().create_future()
        entry = (size, waiter)
        self._waiting.append(entry)
        WAITS.inc()
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release(size)  # granted just as it was cancelled: give the bytes back
            else:
                if entry in self._waiting:  # a grant may have dropped it already
                    self._waiting.remove(entry)
                self._grant()  # the waiters behind it may fit now
            raise

    def _release(self, size: int) -> None:
        self.used -= size
        self._grant()
        INFLIGHT_BYTES.set(self.used)

    def _grant(self) -> None:
        """Admit waiters from the head of the line while they fit."""
        while self._waiting:
            size, waiter = self._waiting[0]
            if waiter.done():  # cancelled: its own handler removes it too; skip it here
                self._waiting.popleft()
                continue
            if self.used + size > self.limit:
                return
            self._waiting.popleft()
            self.used += size
            waiter.set_result(None)
