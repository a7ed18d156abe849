"""Bounds on what a change may carry beyond its schema: value nesting depth and number ranges.

The JSON Schema cannot say these (a value is "any JSON"), and a change that breaks
them must not fail the whole push, so a server checks them per change and answers
``rejected`` with a stable code (PROTOCOL.md §4.1, "Value bounds"):

* ``value_too_deep``: a ``set`` or ``append`` value nests more than
  ``MAX_VALUE_DEPTH`` arrays or objects (``[]`` has depth 1, ``[[]]`` depth 2);
* ``invalid_change``: a value (over MessagePack) that is not JSON: binary,
  extension or timestamp types, NaN or infinities, non-string object keys;
* ``value_out_of_range``: an integer anywhere in the change (a value, an
  ``inc`` amount, the context) is outside signed 64 bits, or the HLC's logical
  counter is above ``MAX_HLC_COUNTER``. An ``inc`` that would take a counter
  out of signed 64 bits is refused the same way (``merge``, ``crdt.counter``).

>>> value_depth({"a": [1, {"b": "c"}]})
3
>>> check_value([[[]]]) is None
True
>>> check_value(2**64)
'value_out_of_range'
"""

from __future__ import annotations

import math
from typing import Any

from syncproto import errors

MAX_VALUE_DEPTH = 32
"""Arrays and objects nested in one value, at most."""
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_HLC_COUNTER = 2**31 - 1
"""The logical counter of an HLC, at most (the change log stores it in 32 bits)."""


def in_int64(number: int) -> bool:
    return INT64_MIN <= number <= INT64_MAX


def value_depth(value: Any, stop: int = MAX_VALUE_DEPTH + 1) -> int:
    """How many arrays and objects nest in ``value`` (0 for a scalar), counted up to ``stop``.

    Iterative, so a value deeper than the interpreter's recursion limit is measured too.
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest >= stop:
                return deepest
        stack.extend((child, depth) for child in children)
    return deepest


def check_value(value: Any) -> str | None:
    """The error code for a value that breaks a bound or is not JSON, or ``None``.

    MessagePack can carry what JSON cannot (binary, extension and timestamp types, NaN,
    non-string keys); such a value is ``invalid_change``, or every JSON reader of the
    entity would fail on it. One pass, level by level (it runs for every value pushed).
    """
    level = [value]
    depth = 0
    while level:
        below: list[Any] = []
        for item in level:
            kind = type(item)
            if kind is str or kind is bool or item is None:
                continue
            if kind is dict or kind is list or kind is tuple:
                if kind is dict:
                    if not all(type(k) is str for k in item):
                        return errors.INVALID_CHANGE
                    below.extend(item.values())
                else:  # tuples: values built in-process (SDK test doubles)
                    below.extend(item)
                continue
            code = _check_scalar(item)
            if code is not None:
                return code
        if below or any(type(item) in _CONTAINERS for item in level):
            depth += 1
            if depth > MAX_VALUE_DEPTH:
                return errors.VALUE_TOO_DEEP
        level = below
    return None


_CONTAINERS = (dict, list, tuple)


def _check_scalar(item: Any) -> str | None:
    if isinstance(item, bool):
        return None
    if isinstance(item, int):
        return None if in_int64(item) else errors.VALUE_OUT_OF_RANGE
    if isinstance(item, float):
        return None if math.isfinite(item) else errors.INVALID_CHANGE
    if isinstance(item, str):
        return None
    return errors.INVALID_CHANGE


def storable(value: Any, depth: int = MAX_VALUE_DEPTH + 1) -> Any:
    """``value`` made JSON and encodable: integers outside signed 64 bits and anything JSON
    has no type for (binary, extensions, timestamps; non-string keys) as text, and every
    array or object nested deeper than ``depth`` replaced by ``None``.

    For keeping a change that broke the bounds (a dead letter) where it must be encoded.

    >>> storable({"a": [[1]], "b": 2**70, 3: b"x"}, depth=2)
    {'a': [None], 'b': '1180591620717411303424', '3': "b'x'"}
    """
    if isinstance(value, dict | list | tuple):
        if depth <= 0:
            return None
        if isinstance(value, dict):
            return {k if isinstance(k, str) else repr(k): storable(v, depth - 1) for k, v in value.items()}
        return [storable(v, depth - 1) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return value if in_int64(value) else str(value)
    if isinstance(value, str | float | bool) or value is None:
        return value
    return repr(value)


__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_HLC_COUNTER",
    "MAX_VALUE_DEPTH",
    "check_value",
    "in_int64",
    "storable",
    "value_depth",
]
