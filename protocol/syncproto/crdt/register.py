"""Multi-value register: keeps every concurrent write, a rule picks the view.

A write removes exactly the siblings its context has seen and adds itself.
Siblings that survive are concurrent with the new write: that is a conflict,
and the caller records it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from msgspec import Struct

from syncproto.vv import Dot, covers


class Sibling(Struct, gc=False, frozen=True):
    value: Any
    replica: str
    n: int
    hlc: tuple[int, int]
    user: str = ""

    @property
    def dot(self) -> Dot:
        return Dot(self.replica, self.n)


class Register(Struct, gc=False, tag="register", tag_field="kind"):
    siblings: list[Sibling] = []


def _canonical(siblings: list[Sibling]) -> list[Sibling]:
    return sorted(siblings, key=lambda s: (s.replica, s.n))


def assign(reg: Register, new: Sibling, context: Mapping[str, int]) -> tuple[Register, list[Sibling]]:
    """Apply a write. Returns the new register and the siblings concurrent with ``new``.

    A sibling with the write's own dot was written by an earlier op of the same
    change: the write replaces it (a change's ops apply in order). Only the very
    same write again is a replay, which changes nothing.
    """
    if not reg.siblings:
        return Register([new]), []
    kept = []
    for s in reg.siblings:
        if s.replica == new.replica and s.n == new.n:
            if s == new:
                return reg, []  # replay of a write already applied: idempotent
            continue  # an earlier op of this change, replaced
        if context.get(s.replica, 0) < s.n:
            kept.append(s)
    if not kept:
        return Register([new]), []
    return Register(_canonical([*kept, new])), kept


def same_write_key(s: Sibling) -> tuple[tuple[int, int], str, bytes]:
    """Chooses between two copies of one write (same dot) that differ.

    They differ when the server clamped the stamp of a device whose clock runs
    ahead (the device keeps the original) or recorded another user. The lower
    stamp, which is the server's, is kept whichever side it is on, so join stays
    commutative and a device adopts the server's stamp when it pulls.
    """
    return (s.hlc, s.user, msgspec.json.encode(s.value, order="sorted"))


def join(a: Register, b: Register, vv_a: Mapping[str, int], vv_b: Mapping[str, int]) -> Register:
    """State merge: keep common siblings and those the other side has not seen."""
    by_a = {s.dot: s for s in a.siblings}
    by_b = {s.dot: s for s in b.siblings}
    out = [
        s if s.dot not in by_b or s == by_b[s.dot] else min(s, by_b[s.dot], key=same_write_key)
        for s in a.siblings
        if s.dot in by_b or not covers(vv_b, s.dot)
    ]
    out += [s for s in b.siblings if s.dot not in by_a and not covers(vv_a, s.dot)]
    return Register(_canonical(out))
