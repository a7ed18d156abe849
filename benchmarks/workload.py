"""The delivery workload shared by the scenarios, as our changes and as PouchDB documents.

A delivery is created with a status and an address, then updated with a
status, a cash-on-delivery increment and a scanned parcel: a register, a
counter and a set (``config/collections.toml``). The PouchDB documents carry
the same values, so both servers store and return the same information.
"""

from __future__ import annotations

from typing import Any

from benchmarks.wire import Json, change, now_ms

COLLECTION = "deliveries"
COD_CENTS = 1250


def entity_id(prefix: str, i: int) -> str:
    return f"{prefix}-{i}"


def create_ops(i: int) -> list[Json]:
    return [
        {"op": "set", "field": "status", "value": "out_for_delivery"},
        {"op": "set", "field": "address", "value": f"{i} Sheikh Zayed Rd, Dubai"},
    ]


def update_ops(i: int) -> list[Json]:
    return [
        {"op": "set", "field": "status", "value": "delivered"},
        {"op": "inc", "field": "cod_cents", "by": COD_CENTS},
        {"op": "add", "field": "scanned", "value": f"parcel-{i}"},
    ]


def creates(prefix: str, count: int, first_n: int = 1) -> list[Json]:
    """``count`` changes creating ``prefix-0 ..``, numbered from ``first_n``."""
    wall = now_ms()
    return [change(first_n + i, entity_id(prefix, i), create_ops(i), (wall, i)) for i in range(count)]


def updates(replica: str, prefix: str, count: int, first_n: int) -> list[Json]:
    """``count`` changes updating the entities made by :func:`creates` (each has seen its creation)."""
    wall = now_ms()
    return [
        change(first_n + i, entity_id(prefix, i), update_ops(i), (wall, i), context={replica: first_n - count + i})
        for i in range(count)
    ]


def pouch_creates(prefix: str, count: int) -> list[dict[str, Any]]:
    return [
        {"_id": entity_id(prefix, i), "status": "out_for_delivery", "address": f"{i} Sheikh Zayed Rd, Dubai"}
        for i in range(count)
    ]


def pouch_updates(prefix: str, count: int, revs: dict[str, str]) -> list[dict[str, Any]]:
    """The updates of :func:`pouch_creates`' documents; ``revs`` maps each id to its current ``_rev``."""
    return [
        {
            "_id": entity_id(prefix, i),
            "_rev": revs[entity_id(prefix, i)],
            "status": "delivered",
            "address": f"{i} Sheikh Zayed Rd, Dubai",
            "cod_cents": COD_CENTS,
            "scanned": [f"parcel-{i}"],
        }
        for i in range(count)
    ]
