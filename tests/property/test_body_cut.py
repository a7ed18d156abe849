"""Cutting a body too deep to decode (syncserver/transport/body.py) replaces exactly the arrays and
objects that start deeper than the limit with null, in JSON and MessagePack alike, leaves everything
else as it was, and never fails on bytes that are not a document at all."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from syncserver.transport.body import CUT_DEPTH, cut_json, cut_msgpack, decode_bounded

# Strings full of what a bracket counter could trip on: brackets, quotes, backslashes.
TRICKY = st.text(st.sampled_from('[]{}"\\,:ab é\n\t'), max_size=8)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False), TRICKY
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TRICKY, inner, max_size=3))
LIMITS = st.integers(0, 6)


def prune(value: Any, limit: int) -> Any:
    """``value`` with every array or object deeper than ``limit`` (the outermost is depth 1) as None."""
    if isinstance(value, dict | list):
        if limit <= 0:
            return None
        if isinstance(value, dict):
            return {k: prune(v, limit - 1) for k, v in value.items()}
        return [prune(v, limit - 1) for v in value]
    return value


@given(VALUES, LIMITS, st.sampled_from([None, 0, 2]), st.booleans())
def test_cutting_json_nulls_exactly_the_containers_below_the_limit(
    value: Any, limit: int, indent: int | None, ascii_only: bool
) -> None:
    body = json.dumps(value, indent=indent, ensure_ascii=ascii_only).encode()
    assert msgspec.json.decode(cut_json(body, limit)) == prune(value, limit)


@given(VALUES, LIMITS)
def test_cutting_msgpack_nils_exactly_the_containers_below_the_limit(value: Any, limit: int) -> None:
    assert msgspec.msgpack.decode(cut_msgpack(msgspec.msgpack.encode(value), limit)) == prune(value, limit)


@given(VALUES)
def test_a_cut_at_or_below_the_depth_changes_nothing(value: Any) -> None:
    body = msgspec.json.encode(value)
    packed = msgspec.msgpack.encode(value)
    assert cut_json(body, 1000) == body
    assert cut_msgpack(packed, 1000) == packed


@given(st.binary(max_size=64), LIMITS)
def test_bytes_that_are_no_document_never_fail_the_cut_or_escape_decode_errors(data: bytes, limit: int) -> None:
    assert isinstance(cut_json(data, limit), bytes)
    assert isinstance(cut_msgpack(data, limit), bytes)
    for decode, cut in ((msgspec.json.decode, cut_json), (msgspec.msgpack.decode, cut_msgpack)):
        with contextlib.suppress(msgspec.DecodeError):  # anything else would fail the test
            decode_bounded(decode, cut, data)


def test_a_document_deeper_than_the_interpreter_can_decode_is_cut_not_a_recursion_error() -> None:
    depth = 200_000
    body = b'{"a": ' + b"[" * depth + b"1" + b"]" * depth + b', "b": "[["}'
    packed = b"\x82\xa1a" + b"\x91" * depth + b"\x01" + b"\xa1b\xa2[["
    kept: Any = None  # the object is depth 1; arrays at depths 2..CUT_DEPTH stay
    for _ in range(CUT_DEPTH - 1):
        kept = [kept]
    assert decode_bounded(msgspec.json.decode, cut_json, body) == {"a": kept, "b": "[["}
    assert decode_bounded(msgspec.msgpack.decode, cut_msgpack, packed) == {"a": kept, "b": "[["}
