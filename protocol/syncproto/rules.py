"""Resolution rules: how a register's view picks one winner among siblings.

Rules never drop a sibling; they only choose what a reader sees. Every rule is
deterministic given the same siblings, so every replica shows the same winner.

>>> from syncproto.crdt.register import Sibling
>>> a = Sibling("failed", "phone-a", 3, (2000, 0))
>>> b = Sibling("delivered", "phone-b", 5, (1000, 0))
>>> Lww().pick([a, b]).value
'failed'
>>> Precedence(["delivered", "failed"]).pick([a, b]).value
'delivered'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from syncproto.crdt.register import Sibling


def _lww_key(s: Sibling) -> tuple[tuple[int, int], str, int]:
    return (s.hlc, s.replica, s.n)


class Rule(Protocol):
    """Picks the visible value among concurrent siblings (never empty)."""

    name: str

    def pick(self, siblings: Sequence[Sibling]) -> Sibling: ...


class Lww:
    """Last writer wins: highest HLC, then replica id, then counter."""

    name = "lww"

    def pick(self, siblings: Sequence[Sibling]) -> Sibling:
        return max(siblings, key=_lww_key)


class Precedence:
    """A fixed order of values, earliest strongest ("delivered beats failed").

    Values not in the order rank below all listed ones; ties fall back to LWW.
    """

    name = "precedence"

    def __init__(self, order: Sequence[Any]) -> None:
        self.order = list(order)

    def _rank(self, s: Sibling) -> int:
        try:
            return len(self.order) - self.order.index(s.value)
        except ValueError:
            return 0

    def pick(self, siblings: Sequence[Sibling]) -> Sibling:
        return max(siblings, key=lambda s: (self._rank(s), _lww_key(s)))


class Resolver:
    """A Python function chooses. It sees siblings in a canonical order and must
    return one of them; if it fails or returns something else, LWW decides, so a
    buggy resolver cannot make replicas diverge."""

    name = "python"

    def __init__(self, fn: Callable[[list[Sibling]], Sibling], qualname: str) -> None:
        self.fn = fn
        self.qualname = qualname

    def pick(self, siblings: Sequence[Sibling]) -> Sibling:
        ordered = sorted(siblings, key=lambda s: (s.replica, s.n))
        try:
            chosen = self.fn(list(ordered))
            if chosen in ordered:  # inside the try: a foreign object's __eq__ may raise too
                return chosen
        except Exception:  # noqa: S110 - any failure of user code falls back to LWW
            pass
        return Lww().pick(siblings)


LWW = Lww()
