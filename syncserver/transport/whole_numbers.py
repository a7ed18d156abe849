"""JSON numbers as the published JSON Schema reads them: ``2.0`` is the integer ``2``.

Our OpenAPI schemas are JSON Schema 2020-12, where an ``integer`` is any number
with no fractional part, so ``{"pick": 2.0}`` is valid. msgspec's strict
decoders (docs/adr/0002) refuse a float where an ``int`` is declared. Rather
than loosen them (lax mode would also turn ``"2"`` into ``2``), ``decode_whole``
retries such a body once the whole floats at the very positions msgspec
complained about are made integers; everything else, values of type ``Any``
included, is left as sent. A fractional number (``2.5``) is still refused.

Usage::

    choice = decode_whole(override_request_decoder, body)  # raises msgspec errors like decoder.decode
"""

from __future__ import annotations

import re
from typing import Any, Final, TypeVar

import msgspec

T = TypeVar("T")

MAX_PASSES: Final = 32
"""Each pass fixes one field (in every list element and map value); a body needing more is refused."""

_WHOLE_FLOAT_ERROR = re.compile(r"^Expected `[^`]*\bint\b[^`]*`, got `float` - at `(\$[^`]*)`$")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_EXACT: Final = 2**53


def decode_whole(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """``decoder.decode(body)``, accepting whole floats where an integer is declared."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        first = error = exc
    try:
        tree = msgspec.json.decode(body)
    except RecursionError:  # nested past what the typed decode reached: refuse as that decode did
        raise first from None
    for _ in range(MAX_PASSES):
        match = _WHOLE_FLOAT_ERROR.match(str(error))
        if match is None or not _fix(tree, _steps(match[1])):
            raise error
        try:
            decoded: T = msgspec.convert(tree, decoder.type, strict=True)
            return decoded
        except msgspec.ValidationError as exc:
            error = exc
    raise error


def _steps(path: str) -> list[str | None]:
    """``$.changes[0].hlc[1]`` -> ``["changes", None, "hlc", None]``: a field name, or ``None`` for every item.

    List indices widen to every item on purpose: elements share a type, so the same fix applies to all.
    """
    return [name or None for name, _ in _STEP.findall(path.removeprefix("$"))]


def _fix(node: Any, steps: list[str | None]) -> bool:
    """Make the whole floats at ``steps`` (every element for ``None``) integers; whether any was."""
    if not steps:
        return False
    head, rest = steps[0], steps[1:]
    if head is None:
        keys: list[Any] = (
            list(range(len(node))) if isinstance(node, list) else list(node) if isinstance(node, dict) else []
        )
    else:
        keys = [head] if isinstance(node, dict) and head in node else []
    fixed = False
    for key in keys:
        value = node[key]
        if rest:
            fixed = _fix(value, rest) or fixed
        elif isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT:
            node[key] = int(value)
            fixed = True
    return fixed
