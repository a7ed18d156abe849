"""PN-counter: each replica's increments and decrements, summed.

Per replica it keeps ``(last_n, inc, dec)``. The server applies a replica's
changes in counter order, so a replica's totals only grow with ``last_n`` and
the entry with the larger ``last_n`` is the newer one.
"""

from __future__ import annotations

from msgspec import Struct

from syncproto.vv import Dot


class Counter(Struct, gc=False, tag="counter", tag_field="kind"):
    entries: dict[str, tuple[int, int, int]] = {}


def increment(c: Counter, dot: Dot, by: int) -> Counter:
    last_n, inc, dec = c.entries.get(dot.replica, (0, 0, 0))
    if dot.n < last_n:
        return c  # an older change of this replica: already counted
    entries = dict(c.entries)
    entries[dot.replica] = (dot.n, inc + max(by, 0), dec + max(-by, 0))
    return Counter(entries)


def value(c: Counter) -> int:
    return sum(inc - dec for _, inc, dec in c.entries.values())


def join(a: Counter, b: Counter) -> Counter:
    entries = dict(a.entries)
    for replica, entry in b.entries.items():
        mine = entries.get(replica)
        if mine is None or entry > mine:
            entries[replica] = entry
    return Counter(dict(sorted(entries.items())))
