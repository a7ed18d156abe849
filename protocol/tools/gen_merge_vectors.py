"""Write the merge vectors in ``protocol/vectors/merge/`` (run from the repository root).

Each case is written by hand here, expected view included; only the Yjs text
updates are made with pycrdt (fixed client ids, so the bytes are reproducible).
The vectors are then checked against ``syncproto.optimistic`` by
``tests/unit/test_merge_vectors.py`` and against the browser SDK by its unit tests.

    .venv/bin/python protocol/tools/gen_merge_vectors.py
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text

OUT = Path(__file__).resolve().parents[1] / "vectors" / "merge"
ME = "phone-a"

DELIVERIES: dict[str, Any] = {
    "name": "deliveries",
    "on_delete": "update_wins",
    "fields": {
        "status": {"kind": "register", "rule": "precedence", "order": ["delivered", "failed", "out_for_delivery"]},
        "cod_cents": {"kind": "counter"},
        "scanned": {"kind": "set"},
        "notes": {"kind": "text"},
        "trail": {"kind": "log"},
    },
}
STRICT_DELETES = {**DELIVERIES, "on_delete": "delete_wins"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def change(n: int, ops: list[dict[str, Any]], context: dict[str, int] | None = None, hlc: int = 0) -> dict[str, Any]:
    return {
        "id": f"c-{ME}-{n}",
        "n": n,
        "collection": "deliveries",
        "entity": "dlv-1",
        "hlc": [1_700_000_000_000 + (hlc or n), 0],
        "context": context or {},
        "ops": ops,
    }


def view(vv: dict[str, int], fields: dict[str, Any], *, deleted: bool = False, seq: int = 0) -> dict[str, Any]:
    return {"collection": "deliveries", "entity": "dlv-1", "seq": seq, "vv": vv, "deleted": deleted, "fields": fields}


def sib(value: Any, replica: str, n: int, hlc: int) -> dict[str, Any]:
    return {"value": value, "replica": replica, "n": n, "hlc": [hlc, 0]}


# --- text documents ----------------------------------------------------------------

server_doc: Doc[Any] = Doc(client_id=101)
server_text = server_doc.get("text", type=Text)
server_text += "Leave at door 🚪"
SERVER_STATE = server_doc.get_update()

mine: Doc[Any] = Doc(client_id=202)
mine.apply_update(SERVER_STATE)
mine_text = mine.get("text", type=Text)
before = mine.get_state()
# Insert after the emoji: code point 15 is UTF-8 byte 18 in pycrdt.
mine_text.insert(len("Leave at door 🚪".encode()), " — ça va? 👍🏽")
AFTER_EMOJI = mine.get_update(before)
before = mine.get_state()
del mine_text[0 : len(b"Leave ")]  # delete "Leave "
DELETE_PREFIX = mine.get_update(before)

# An update that builds on edits nobody here has (issue 12): another replica's insert
# and then a deletion of it, shipped without the insert.
other: Doc[Any] = Doc(client_id=303)
other.apply_update(SERVER_STATE)
other_text = other.get("text", type=Text)
other_text.insert(0, "URGENT ")
before = other.get_state()
del other_text[0 : len("URGENT ")]
DELETES_UNSEEN = other.get_update(before)

fresh: Doc[Any] = Doc(client_id=404)
fresh_text = fresh.get("text", type=Text)
fresh_text += "日本語 ok"
FRESH = fresh.get_update()
before = fresh.get_state()
fresh_text.insert(len("日本語".encode()), "🇯🇵")
FRESH_FLAG = fresh.get_update(before)

CASES: dict[str, dict[str, Any]] = {
    "register-first-write": {
        "description": "A write to an entity never pulled: a plain value, no siblings, vv has our counter.",
        "collection": DELIVERIES,
        "state": None,
        "changes": [change(1, [{"op": "set", "field": "status", "value": "out_for_delivery"}])],
        "expected": view({ME: 1}, {"status": {"kind": "register", "value": "out_for_delivery"}}),
    },
    "register-write-collapses-siblings": {
        "description": "A write whose context has seen every sibling replaces them all.",
        "collection": DELIVERIES,
        "state": view(
            {"phone-b": 2, "web-1": 4},
            {
                "status": {
                    "kind": "register",
                    "value": "failed",
                    "siblings": [sib("failed", "phone-b", 2, 2000), sib("pending", "web-1", 4, 1000)],
                }
            },
            seq=9,
        ),
        "changes": [
            change(1, [{"op": "set", "field": "status", "value": "out_for_delivery"}], {"phone-b": 2, "web-1": 4})
        ],
        "expected": view(
            {"phone-b": 2, "web-1": 4, ME: 1}, {"status": {"kind": "register", "value": "out_for_delivery"}}, seq=9
        ),
    },
    "register-precedence-keeps-unseen-sibling": {
        "description": (
            "A write that has seen one sibling but not the other: both stay, precedence "
            "picks 'delivered' over a newer 'failed'."
        ),
        "collection": DELIVERIES,
        "state": view(
            {"phone-b": 2, "web-1": 4},
            {
                "status": {
                    "kind": "register",
                    "value": "failed",
                    "siblings": [sib("failed", "phone-b", 2, 1_700_000_009_000), sib("pending", "web-1", 4, 1000)],
                }
            },
            seq=9,
        ),
        "changes": [change(3, [{"op": "set", "field": "status", "value": "delivered"}], {"web-1": 4})],
        "expected": view(
            {"phone-b": 2, "web-1": 4, ME: 3},
            {
                "status": {
                    "kind": "register",
                    "value": "delivered",
                    "siblings": [
                        sib("delivered", ME, 3, 1_700_000_000_003),
                        sib("failed", "phone-b", 2, 1_700_000_009_000),
                    ],
                }
            },
            seq=9,
        ),
    },
    "register-seen-value-replaced": {
        "description": (
            "A write that has seen the pulled value replaces it; an undeclared field "
            "(an object value too) is a register."
        ),
        "collection": DELIVERIES,
        "state": view({"web-1": 1}, {"eta": {"kind": "register", "value": 15}}),
        "changes": [
            change(1, [{"op": "set", "field": "eta", "value": 30}], {"web-1": 1}),
            change(2, [{"op": "set", "field": "recipient", "value": {"name": "Zoë", "floor": 3}}]),
        ],
        "expected": view(
            {"web-1": 1, ME: 2},
            {
                "eta": {"kind": "register", "value": 30},
                "recipient": {"kind": "register", "value": {"name": "Zoë", "floor": 3}},
            },
        ),
    },
    "register-lww-concurrent": {
        "description": (
            "Concurrent LWW writes (context empty): the highest HLC wins, siblings sorted by replica then n."
        ),
        "collection": DELIVERIES,
        "state": view(
            {"web-1": 1, "phone-b": 1},
            {
                "eta": {
                    "kind": "register",
                    "value": 20,
                    "siblings": [sib(20, "phone-b", 1, 1_800_000_000_000), sib(10, "web-1", 1, 1_600_000_000_000)],
                }
            },
        ),
        "changes": [change(1, [{"op": "set", "field": "eta", "value": 5}])],
        "expected": view(
            {"web-1": 1, "phone-b": 1, ME: 1},
            {
                "eta": {
                    "kind": "register",
                    "value": 20,
                    "siblings": [
                        sib(5, ME, 1, 1_700_000_000_001),
                        sib(20, "phone-b", 1, 1_800_000_000_000),
                        sib(10, "web-1", 1, 1_600_000_000_000),
                    ],
                }
            },
        ),
    },
    "register-two-sets-in-one-change": {
        "description": "The second set of one field in one change replaces the first: no sibling with our own dot.",
        "collection": DELIVERIES,
        "state": None,
        "changes": [
            change(
                1,
                [
                    {"op": "set", "field": "status", "value": "failed"},
                    {"op": "set", "field": "status", "value": "delivered"},
                ],
            )
        ],
        "expected": view({ME: 1}, {"status": {"kind": "register", "value": "delivered"}}),
    },
    "counter-increments": {
        "description": "Increments and decrements add to the pulled counter value.",
        "collection": DELIVERIES,
        "state": view({"web-1": 3}, {"cod_cents": {"kind": "counter", "value": 1000}}, seq=4),
        "changes": [
            change(1, [{"op": "inc", "field": "cod_cents", "by": 1250}]),
            change(2, [{"op": "inc", "field": "cod_cents", "by": -100}]),
        ],
        "expected": view({"web-1": 3, ME: 2}, {"cod_cents": {"kind": "counter", "value": 2150}}, seq=4),
    },
    "set-add-remove-scalars": {
        "description": "Adds and removes of strings, numbers and booleans; the value is sorted by canonical JSON.",
        "collection": DELIVERIES,
        "state": view({"web-1": 1}, {"scanned": {"kind": "set", "value": ["p-1", "p-2"]}}),
        "changes": [
            change(
                1,
                [
                    {"op": "add", "field": "scanned", "value": "p-3"},
                    {"op": "remove", "field": "scanned", "value": "p-1"},
                ],
            ),
            change(
                2, [{"op": "add", "field": "scanned", "value": 5}, {"op": "add", "field": "scanned", "value": True}]
            ),
            change(
                3,
                [
                    {"op": "add", "field": "scanned", "value": "é-9"},
                    {"op": "remove", "field": "scanned", "value": "nope"},
                ],
            ),
        ],
        "expected": view({"web-1": 1, ME: 3}, {"scanned": {"kind": "set", "value": ["p-2", "p-3", "é-9", 5, True]}}),
    },
    "log-appends": {
        "description": "Appends go last, in op order (the server orders by HLC on the next pull).",
        "collection": DELIVERIES,
        "state": view({"web-1": 1}, {"trail": {"kind": "log", "value": [{"lat": 25.0, "lon": 55.0}]}}),
        "changes": [
            change(1, [{"op": "append", "field": "trail", "value": {"lat": 25.2, "lon": 55.27}}]),
            change(
                2,
                [{"op": "append", "field": "trail", "value": "a"}, {"op": "append", "field": "trail", "value": [1, 2]}],
            ),
        ],
        "expected": view(
            {"web-1": 1, ME: 2},
            {"trail": {"kind": "log", "value": [{"lat": 25.0, "lon": 55.0}, {"lat": 25.2, "lon": 55.27}, "a", [1, 2]]}},
        ),
    },
    "delete-then-update-revives": {
        "description": "Under update_wins a delete hides the entity and a later update revives it with its fields.",
        "collection": DELIVERIES,
        "state": view({"web-1": 2}, {"status": {"kind": "register", "value": "pending"}}, seq=3),
        "changes": [
            change(1, [{"op": "delete"}], {"web-1": 2}),
            change(2, [{"op": "inc", "field": "cod_cents", "by": 7}], {"web-1": 2}),
        ],
        "expected": view(
            {"web-1": 2, ME: 2},
            {"status": {"kind": "register", "value": "pending"}, "cod_cents": {"kind": "counter", "value": 7}},
            seq=3,
        ),
    },
    "delete-hides": {
        "description": "A pending delete hides the entity; its field state is kept.",
        "collection": DELIVERIES,
        "state": view({"web-1": 2}, {"status": {"kind": "register", "value": "pending"}}, seq=3),
        "changes": [change(1, [{"op": "delete"}], {"web-1": 2})],
        "expected": view(
            {"web-1": 2, ME: 1}, {"status": {"kind": "register", "value": "pending"}}, deleted=True, seq=3
        ),
    },
    "delete-wins-unseen-delete-stays": {
        "description": "Under delete_wins an update that has not seen the delete does not revive the entity.",
        "collection": STRICT_DELETES,
        "state": view({"web-1": 3}, {}, deleted=True, seq=5),
        "changes": [change(1, [{"op": "set", "field": "status", "value": "failed"}], {"web-1": 2})],
        "expected": view({"web-1": 3, ME: 1}, {"status": {"kind": "register", "value": "failed"}}, deleted=True, seq=5),
    },
    "delete-wins-seen-delete-revives": {
        "description": "Under delete_wins an update that has seen the delete revives the entity.",
        "collection": STRICT_DELETES,
        "state": view({"web-1": 3}, {}, deleted=True, seq=5),
        "changes": [change(1, [{"op": "set", "field": "status", "value": "failed"}], {"web-1": 3})],
        "expected": view({"web-1": 3, ME: 1}, {"status": {"kind": "register", "value": "failed"}}, seq=5),
    },
    "rejected-changes-skipped-whole": {
        "description": (
            "Changes the server rejects whole change nothing: an op of the wrong kind, a delete mixed with ops."
        ),
        "collection": DELIVERIES,
        "state": view({"web-1": 1}, {"status": {"kind": "register", "value": "pending"}}),
        "changes": [
            change(1, [{"op": "set", "field": "eta", "value": 1}, {"op": "inc", "field": "status", "by": 1}]),
            change(2, [{"op": "set", "field": "eta", "value": 2}, {"op": "delete"}]),
            change(3, [{"op": "add", "field": "cod_cents", "value": "x"}]),
        ],
        "expected": view({"web-1": 1}, {"status": {"kind": "register", "value": "pending"}}),
    },
    "text-unicode-edits": {
        "description": (
            "Yjs updates on pulled text: an insert after an emoji and a deletion at the "
            "start (positions were code points)."
        ),
        "collection": DELIVERIES,
        "state": view(
            {"web-1": 1}, {"notes": {"kind": "text", "value": "Leave at door 🚪", "update": b64(SERVER_STATE)}}
        ),
        "changes": [
            change(1, [{"op": "text", "field": "notes", "update": b64(AFTER_EMOJI)}]),
            change(2, [{"op": "text", "field": "notes", "update": b64(DELETE_PREFIX)}]),
        ],
        "expected": view({"web-1": 1, ME: 2}, {"notes": {"kind": "text", "value": "at door 🚪 — ça va? 👍🏽"}}),
    },
    "text-new-field": {
        "description": (
            "Text typed into an entity never pulled, with CJK and a flag (two code points) inserted between."
        ),
        "collection": DELIVERIES,
        "state": None,
        "changes": [
            change(1, [{"op": "text", "field": "notes", "update": b64(FRESH)}]),
            change(2, [{"op": "text", "field": "notes", "update": b64(FRESH_FLAG)}]),
        ],
        "expected": view({ME: 2}, {"notes": {"kind": "text", "value": "日本語🇯🇵 ok"}}),
    },
    "text-pending-delete-refused": {
        "description": (
            "A text update that deletes content this state lacks is refused whole, "
            "other ops of its change too (issue 12)."
        ),
        "collection": DELIVERIES,
        "state": view(
            {"web-1": 1}, {"notes": {"kind": "text", "value": "Leave at door 🚪", "update": b64(SERVER_STATE)}}
        ),
        "changes": [
            change(
                1,
                [
                    {"op": "set", "field": "status", "value": "failed"},
                    {"op": "text", "field": "notes", "update": b64(DELETES_UNSEEN)},
                ],
            )
        ],
        "expected": view({"web-1": 1}, {"notes": {"kind": "text", "value": "Leave at door 🚪"}}),
    },
    "text-pending-insert-refused": {
        "description": "A text update that builds on an insert this state lacks is refused whole.",
        "collection": DELIVERIES,
        "state": None,
        "changes": [change(1, [{"op": "text", "field": "notes", "update": b64(FRESH_FLAG)}])],
        "expected": view({}, {}, seq=0),
    },
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, case in CASES.items():
        body = {
            "description": case["description"],
            "replica": ME,
            **{k: v for k, v in case.items() if k != "description"},
        }
        (OUT / f"{name}.json").write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
