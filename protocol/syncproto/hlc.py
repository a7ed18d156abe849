"""Hybrid logical clocks.

An HLC is ``(wall_ms, counter)``: it tracks physical time when clocks agree and
stays monotonic when they do not. Ordering is lexicographic. HLCs only break
ties between writes that version vectors already found concurrent; they never
decide causality.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

Hlc = tuple[int, int]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(ms: int) -> str:
    """A millisecond timestamp as views show it: ISO 8601 in UTC, to the millisecond.

    >>> iso(1_700_000_000_123)
    '2023-11-14T22:13:20.123+00:00'
    """
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="milliseconds")


class HybridClock:
    """A replica's clock. ``tick`` stamps a local event, ``observe`` merges a remote stamp.

    >>> clock = HybridClock(wall=lambda: 1000)
    >>> clock.tick()
    (1000, 0)
    >>> clock.tick()
    (1000, 1)
    >>> clock.observe((5000, 3)); clock.tick()
    (5000, 4)
    """

    def __init__(self, wall: Callable[[], int] = now_ms, last: Hlc = (0, 0)) -> None:
        self._wall = wall
        self.last: Hlc = last

    def tick(self) -> Hlc:
        wall = self._wall()
        lw, lc = self.last
        self.last = (wall, 0) if wall > lw else (lw, lc + 1)
        return self.last

    def observe(self, remote: Hlc) -> None:
        if remote > self.last:
            self.last = (remote[0], remote[1])


def clamp(hlc: Hlc, now: int, max_skew_ms: int) -> tuple[Hlc, bool]:
    """Bound a device's stamp to ``now + max_skew_ms``.

    Returns the stamp to use and whether it was clamped. A clamped stamp keeps
    its logical counter so that writes from one device stay ordered.
    """
    bound = now + max_skew_ms
    if hlc[0] > bound:
        return (bound, hlc[1]), True
    return hlc, False
