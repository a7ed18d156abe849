"""Retry delays: exponential backoff with jitter, and ``Retry-After`` honoured.

Jitter matters for the fleet, not the phone: when a tunnel or an outage ends,
a thousand drivers reconnect at once, and random delays spread them out.

>>> b = Backoff(base=1.0, cap=8.0, rng=lambda: 1.0)
>>> [b.next() for _ in range(5)]
[1.0, 2.0, 4.0, 8.0, 8.0]
>>> b.reset(); b.next()
1.0
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """``next()`` is uniform in ``[d/2, d]`` with ``d = min(cap, base * 2**attempt)`` ("equal jitter").

    Half the delay is kept so a retry never comes at once after a failure; the
    other half is random so clients that failed together do not retry together.
    """

    def __init__(self, base: float = 0.5, cap: float = 60.0, rng: Callable[[], float] = random.random) -> None:
        self.base = base
        self.cap = cap
        self.rng = rng
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2.0**self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        return delay / 2 + delay / 2 * self.rng()

    def reset(self) -> None:
        self.attempt = 0

    def retry_after(self, seconds: float) -> float:
        """The server's ``Retry-After``, plus up to 10 % jitter so rate-limited clients do not return in step."""
        self.attempt = min(self.attempt + 1, 32)
        return seconds * (1 + 0.1 * self.rng())
