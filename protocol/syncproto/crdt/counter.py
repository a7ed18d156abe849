"""PN-counter: each replica's increments and decrements, summed.

Per replica it keeps ``(last_n, inc, dec)``. The server applies a replica's
changes in counter order, so a replica's totals only grow with ``last_n`` and
the entry with the larger ``last_n`` is the newer one.

A counter stays within signed 64 bits, so that every store and every client can
hold it: ``increment`` raises ``OutOfRange`` rather than let the value leave
that range, or a replica's totals (never negative) pass unsigned 64 bits.
"""

from __future__ import annotations

from msgspec import Struct

from syncproto.vv import Dot

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1


class OutOfRange(ValueError):
    """The increment would take the counter out of signed 64 bits, or a replica's totals beyond 64 bits."""


class Counter(Struct, gc=False, tag="counter", tag_field="kind"):
    entries: dict[str, tuple[int, int, int]] = {}


def increment(c: Counter, dot: Dot, by: int) -> Counter:
    last_n, inc, dec = c.entries.get(dot.replica, (0, 0, 0))
    if dot.n < last_n:
        return c  # an older change of this replica: already counted
    if by >= 0:
        inc += by
    else:
        dec -= by
    total = by
    for _, i, d in c.entries.values():
        total += i - d
    if not INT64_MIN <= total <= INT64_MAX:
        raise OutOfRange(f"the counter would be {total}, outside signed 64 bits")
    if inc > UINT64_MAX or dec > UINT64_MAX:
        raise OutOfRange("this replica's increments or decrements of the counter would add up beyond 64 bits")
    entry = (dot.n, inc, dec)
    entries = dict(c.entries)
    entries[dot.replica] = entry
    return Counter(entries)


def value(c: Counter) -> int:
    total = 0
    for _, inc, dec in c.entries.values():  # a loop: every pulled counter is summed, and a generator costs more
        total += inc - dec
    return total


def join(a: Counter, b: Counter) -> Counter:
    entries = dict(a.entries)
    for replica, entry in b.entries.items():
        mine = entries.get(replica)
        if mine is None or entry > mine:
            entries[replica] = entry
    return Counter(dict(sorted(entries.items())))
