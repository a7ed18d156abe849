"""Add-wins observed-remove set.

Each element carries the dots of the adds that put it there. A remove deletes
only the dots its context has seen, so an add concurrent with a remove
survives: add wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from msgspec import Struct

from syncproto.vv import Dot, covers

_encode = msgspec.json.Encoder(order="sorted").encode


def element_key(value: Any) -> str:
    """Canonical JSON of an element: equal values share one key."""
    return _encode(value).decode()


class AWSet(Struct, gc=False, tag="set", tag_field="kind"):
    elements: dict[str, list[Dot]] = {}


def _with(s: AWSet, key: str, dots: list[Dot]) -> AWSet:
    elements = dict(s.elements)
    if dots:
        elements[key] = sorted(set(dots))
    else:
        elements.pop(key, None)
    return AWSet(elements)


def add(s: AWSet, dot: Dot, context: Mapping[str, int], value: Any) -> AWSet:
    key = element_key(value)
    kept = [d for d in s.elements.get(key, []) if not covers(context, d)]
    return _with(s, key, [*kept, dot])


def remove(s: AWSet, context: Mapping[str, int], value: Any) -> AWSet:
    key = element_key(value)
    return _with(s, key, [d for d in s.elements.get(key, []) if not covers(context, d)])


def value(s: AWSet) -> list[Any]:
    return [msgspec.json.decode(key) for key in sorted(s.elements)]


def join(a: AWSet, b: AWSet, vv_a: Mapping[str, int], vv_b: Mapping[str, int]) -> AWSet:
    out: dict[str, list[Dot]] = {}
    for key in a.elements.keys() | b.elements.keys():
        da, db = set(a.elements.get(key, [])), set(b.elements.get(key, []))
        keep = (da & db) | {d for d in da - db if not covers(vv_b, d)} | {d for d in db - da if not covers(vv_a, d)}
        if keep:
            out[key] = sorted(keep)
    return AWSet(dict(sorted(out.items())))
