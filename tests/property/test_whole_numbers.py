"""``decode_whole``: a whole float is the integer the JSON Schema says it is, and nothing else is loosened."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncproto.messages import push_request_decoder
from syncserver.admin.views import override_request_decoder
from syncserver.transport.whole_numbers import decode_whole

SAFE = st.integers(min_value=0, max_value=2**53)


def push_body(n: Any, hlc: list[Any], seen: Any, by: Any, value: Any) -> bytes:
    ops = [{"op": "inc", "field": "c", "by": by}, {"op": "set", "field": "v", "value": value}]
    change = {"id": "x", "n": n, "collection": "c", "entity": "e", "hlc": hlc, "context": {"r": seen}, "ops": ops}
    return json.dumps({"replica": "r", "changes": [change, {**change, "id": "y"}]}).encode()


@given(n=st.integers(1, 2**53), wall=SAFE, logical=SAFE, seen=SAFE, by=st.integers(-(2**53), 2**53), spell=st.data())
def test_a_whole_float_decodes_as_its_integer_and_values_keep_their_spelling(
    n: int, wall: int, logical: int, seen: int, by: int, spell: st.DataObject
) -> None:
    def maybe_float(value: int) -> int | float:
        return float(value) if spell.draw(st.booleans()) else value

    body = push_body(maybe_float(n), [maybe_float(wall), maybe_float(logical)], maybe_float(seen), maybe_float(by), 2.0)
    expected = push_request_decoder.decode(push_body(n, [wall, logical], seen, by, 2.0))
    assert decode_whole(push_request_decoder, body) == expected
    assert all(isinstance(c.ops[1].value, float) for c in expected.changes)  # a value of type Any stays 2.0


@given(st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()))
def test_a_fractional_number_is_still_refused(fraction: float) -> None:
    with pytest.raises(msgspec.ValidationError, match="got `float`"):
        decode_whole(override_request_decoder, json.dumps({"pick": fraction}).encode())


@pytest.mark.parametrize("pick", ['"1"', "true", "[1]"])
def test_other_types_are_not_coerced(pick: str) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_whole(override_request_decoder, f'{{"pick": {pick}}}'.encode())


def test_a_whole_float_past_two_to_the_53_is_refused() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_whole(override_request_decoder, b'{"pick": 1e300}')
