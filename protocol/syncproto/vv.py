"""Dots and version vectors: how the protocol decides causality.

A *dot* ``(replica, n)`` names one change. A *version vector* maps each replica
to the highest counter seen from it. Because the server accepts a replica's
changes only in counter order, ``vv[r] >= n`` means "every change of ``r`` up to
``n`` that touched this entity has been seen", which is what ``covers`` tests.
"""

from __future__ import annotations

from collections.abc import Mapping

from msgspec import Struct


class Dot(Struct, gc=False, frozen=True, array_like=True, order=True):
    """The identity of one change: the replica that made it and its counter."""

    replica: str
    n: int


def covers(vv: Mapping[str, int], dot: Dot) -> bool:
    """True when a state with version vector ``vv`` has seen ``dot``."""
    return vv.get(dot.replica, 0) >= dot.n


def merge(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    """Pointwise maximum: the least vector that has seen both."""
    out = dict(a)
    for replica, n in b.items():
        if n > out.get(replica, 0):
            out[replica] = n
    return out


def dominates(a: Mapping[str, int], b: Mapping[str, int]) -> bool:
    """True when ``a`` has seen everything ``b`` has."""
    return all(a.get(r, 0) >= n for r, n in b.items())


def concurrent(a: Mapping[str, int], b: Mapping[str, int]) -> bool:
    """Neither vector has seen everything the other has."""
    return not dominates(a, b) and not dominates(b, a)
