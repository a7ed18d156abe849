"""Oracles for the property tests: plain definitions over the delivery history,
written without the CRDT code they check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from syncproto.messages import SetOp
from tests.property.sim import STATUS_ORDER, Delivery

Dot = tuple[str, int]


def covered(ctx: dict[str, int], dot: Dot) -> bool:
    return ctx.get(dot[0], 0) >= dot[1]


@dataclass(frozen=True)
class Write:
    index: int
    """Position in the delivery history."""
    dot: Dot
    field: str
    value: Any
    ctx: dict[str, int]
    hlc: tuple[int, int]


def register_writes(deliveries: Sequence[Delivery]) -> list[Write]:
    """The register writes in delivery order; a change's ops apply in order, so of
    several writes to one field in one change the last is the write."""
    out: list[Write] = []
    for i, d in enumerate(deliveries):
        last = {op.field: op.value for op in d.change.ops if isinstance(op, SetOp)}
        out += [Write(i, (d.replica, d.change.n), f, v, d.ctx, d.change.hlc) for f, v in last.items()]
    return out


def overwritten_between(w: Write, start: int, end: int, writes: Sequence[Write]) -> bool:
    """Some write to ``w.field`` delivered in ``(start, end)`` had seen ``w``."""
    return any(x.field == w.field and start < x.index < end and covered(x.ctx, w.dot) for x in writes)


def concurrent_with(w: Write, writes: Sequence[Write]) -> list[Write]:
    """Earlier writes to the same field that ``w`` had not seen and that nothing overwrote before ``w`` arrived."""
    return [
        x
        for x in writes
        if x.field == w.field
        and x.index < w.index
        and not covered(w.ctx, x.dot)
        and not overwritten_between(x, x.index, w.index, writes)
    ]


def expected_winner(field: str, values: Sequence[Write]) -> Write:
    def lww(w: Write) -> tuple[tuple[int, int], str, int]:
        return (w.hlc, w.dot[0], w.dot[1])

    if field == "status":

        def rank(w: Write) -> int:
            return len(STATUS_ORDER) - STATUS_ORDER.index(w.value) if w.value in STATUS_ORDER else 0

        return max(values, key=lambda w: (rank(w), lww(w)))
    return max(values, key=lww)
