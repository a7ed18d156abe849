"""Merge vectors (protocol/vectors/merge/): a pulled view plus pending changes gives the
expected optimistic view through ``syncproto.optimistic``. The browser SDK runs the
same files (client-sdk/js/test/vectors.test.ts), so both SDKs show the same state."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from syncproto.crdt import text
from syncproto.messages import Change, EntityView, json_encoder
from syncproto.optimistic import apply_pending
from syncproto.schema import CollectionSpec, compile_collection

MERGE = Path(__file__).resolve().parents[2] / "protocol" / "vectors" / "merge"
VECTORS = sorted(MERGE.glob("*.json"))
ENVELOPE = {"description", "replica", "collection", "state", "changes", "expected"}


def comparable(view: dict[str, Any]) -> dict[str, Any]:
    """The view with text ``update`` members checked and dropped: two Yjs encoders may order one state differently."""
    out = {**view, "fields": {}}
    for name, f in view.get("fields", {}).items():
        if f["kind"] == "text" and "update" in f:
            decoded = text.value(text.TextState(base64.b64decode(f["update"])))
            assert decoded == f["value"], f"text {name}: update holds {decoded!r}, value says {f['value']!r}"
            f = {k: v for k, v in f.items() if k != "update"}
        out["fields"][name] = f
    return out


def test_every_field_kind_and_rule_is_covered() -> None:
    vectors = [json.loads(p.read_text(encoding="utf-8")) for p in VECTORS]
    ops = {op["op"] for v in vectors for c in v["changes"] for op in c["ops"]}
    assert ops == {"set", "inc", "add", "remove", "text", "append", "delete"}
    assert any(f.get("siblings") for v in vectors for f in v["expected"]["fields"].values())
    assert {v["collection"]["on_delete"] for v in vectors} == {"update_wins", "delete_wins"}


@pytest.mark.parametrize("path", VECTORS, ids=[p.stem for p in VECTORS])
def test_merge_vector(path: Path) -> None:
    vector = json.loads(path.read_text(encoding="utf-8"))
    assert set(vector) == ENVELOPE, f"{path.name}: envelope members {set(vector) ^ ENVELOPE}"
    spec = dict(vector["collection"])
    name = spec.pop("name")
    collection = compile_collection(name, msgspec.convert(spec, CollectionSpec))
    view = None if vector["state"] is None else msgspec.convert(vector["state"], EntityView)
    for raw in vector["changes"]:
        change = msgspec.convert(raw, Change)
        view = apply_pending(view, change, vector["replica"], collection)
    assert view is not None
    got = comparable(json.loads(json_encoder.encode(view)))
    assert got == comparable({"fields": {}, **vector["expected"]})
