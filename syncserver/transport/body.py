"""Strict decoding of request bodies into protocol messages, with stable error codes.

We decode with msgspec's strict decoders rather than Litestar's signature model,
which coerces types (``"n": "1"`` would become ``1``); see docs/adr/0002.

Nesting depth. msgspec decodes nested arrays and objects recursively and gives
up with ``RecursionError`` near the interpreter's recursion limit (about 1,000
levels), which would fail the whole request. Values may nest at most
``MAX_VALUE_DEPTH`` (32) levels, a rule checked per change (``value_too_deep``,
``syncproto.merge.check_bounds``), so a body that is too deep to decode is cut
first: every array or object that starts deeper than ``CUT_DEPTH`` is replaced
by ``null``, and the result is decoded again. A value cut that way is still
deeper than 32, so its change alone is rejected; deep nesting anywhere else
fails validation (``invalid_request``), and a body that cannot be cut (it is
not JSON or MessagePack) is ``malformed_json``. Bodies that decode at once, all
normal ones, never pay for the cut.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import msgspec
from litestar import Request

from syncproto import errors
from syncproto.messages import WsClientMessage, ws_client_json_decoder, ws_client_msgpack_decoder
from syncproto.values import MAX_VALUE_DEPTH
from syncserver.errors import ApiError
from syncserver.transport.whole_numbers import decode_whole

T = TypeVar("T")
_TAG_PATH = re.compile(r"\.ops\[\d+\]\.op`?$")

CUT_DEPTH = MAX_VALUE_DEPTH + 8
"""Containers start this deep, at most, after a cut. A value starts at depth 6 of a push
(body, ``changes``, change, ``ops``, op), so a value that was cut is deeper than 32."""


async def decode_body(request: Request[Any, Any, Any], decoder: msgspec.json.Decoder[T]) -> T:
    return decode_json_body(await request.body(), decoder)


def decode_json_body(body: bytes, decoder: msgspec.json.Decoder[T]) -> T:
    """A request body already read, decoded as ``decode_body`` does (the same errors and codes)."""
    try:
        # A whole number (2.0) is an integer where one is declared, as in the published JSON Schema.
        return decode_bounded(partial(decode_whole, decoder), cut_json, body)
    except msgspec.ValidationError as exc:
        message = str(exc)
        if message.startswith("Invalid value") and _TAG_PATH.search(message):
            raise ApiError(422, errors.UNKNOWN_OP, message) from exc
        raise ApiError(422, errors.INVALID_REQUEST, message) from exc
    except msgspec.DecodeError as exc:
        raise ApiError(400, errors.MALFORMED_JSON, f"the body is not valid JSON: {exc}") from exc


def decode_client_message(data: str | bytes) -> WsClientMessage:
    """A WebSocket client message: a text frame is JSON, a binary frame MessagePack (PROTOCOL.md §9.2)."""
    if isinstance(data, str):
        return decode_bounded(partial(decode_whole, ws_client_json_decoder), cut_json, data.encode())
    return decode_bounded(ws_client_msgpack_decoder.decode, cut_msgpack, data)


def decode_bounded(decode: Callable[[bytes], T], cut: Callable[[bytes, int], bytes], data: bytes) -> T:
    """``decode(data)``, or, if ``data`` nests too deep for that, ``decode`` of it cut at ``CUT_DEPTH``.

    Raises ``msgspec.DecodeError`` (or its subclass ``ValidationError``) and nothing else.
    """
    try:
        return decode(data)
    except RecursionError:
        pass
    try:
        return decode(cut(data, CUT_DEPTH))
    except RecursionError as exc:  # the cut found no end: not JSON or MessagePack
        raise msgspec.DecodeError("the message is malformed and nests too deep to read") from exc


# --- cutting JSON ------------------------------------------------------------------

# Strings (skipped whole, so brackets inside them do not count), runs of openers, runs of closers.
_JSON_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[{]+|[\]}]+', re.DOTALL)
_QUOTE = ord('"')
_OPENERS = frozenset(b"[{")


def cut_json(body: bytes, limit: int) -> bytes:
    """``body`` with each array or object that starts deeper than ``limit`` replaced by ``null``.

    A body whose brackets do not balance is returned unchanged (its decoding fails anyway).
    """
    pieces: list[bytes] = []
    depth = 0
    last = 0
    start: int | None = None
    for match in _JSON_TOKEN.finditer(body):
        token = match.group()
        if token[0] == _QUOTE:
            continue
        k = len(token)
        if token[0] in _OPENERS:
            if start is None and depth + k > limit:
                start = match.start() + (limit - depth)  # the opener that reaches limit + 1
            depth += k
        else:
            if start is not None and depth - k <= limit:
                end = match.start() + (depth - limit)  # just after the closer back at limit
                pieces += (body[last:start], b"null")
                last, start = end, None
            depth -= k
    if start is not None:
        return body
    pieces.append(body[last:])
    return b"".join(pieces)


# --- cutting MessagePack -------------------------------------------------------------

_FIXED = {0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
_FIXED.update({0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17})
_SIZED = {0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0), 0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1)}
_SIZED.update({0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0)})
_COUNTED = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}
"""Type byte -> bytes after it (``_FIXED``); (length bytes, extra bytes) before a payload of that
length (``_SIZED``: bin, ext, str); (count bytes, items per count) of arrays and maps (``_COUNTED``)."""


def _fast_table() -> list[tuple[int, int] | None]:
    """Type byte -> (bytes after it, child items or -1) for items whose header says it all."""
    table: list[tuple[int, int] | None] = [None] * 256
    for b in [*range(0x00, 0x80), *range(0xE0, 0x100)]:
        table[b] = (0, -1)
    for b in range(0x80, 0xA0):
        table[b] = (0, 2 * (b & 0x0F) if b <= 0x8F else b & 0x0F)
    for b in range(0xA0, 0xC0):
        table[b] = (b & 0x1F, -1)
    for b, size in _FIXED.items():
        table[b] = (size, -1)
    return table


_FAST = _fast_table()


def _mp_item(data: bytes, pos: int) -> tuple[int, int]:
    """The item at ``pos``: (the position after its header, or after it whole for a scalar; its
    number of child items, or -1 for a scalar). Raises ``ValueError`` past the end or on 0xc1."""
    b = data[pos]
    pos += 1
    if b <= 0x7F or b >= 0xE0:
        return pos, -1
    if b <= 0x8F:
        return pos, 2 * (b & 0x0F)
    if b <= 0x9F:
        return pos, b & 0x0F
    if b <= 0xBF:
        return pos + (b & 0x1F), -1
    if b in _FIXED:
        return pos + _FIXED[b], -1
    if b in _SIZED:
        width, extra = _SIZED[b]
        return pos + width + extra + int.from_bytes(data[pos : pos + width]), -1
    if b in _COUNTED:
        width, per = _COUNTED[b]
        return pos + width, per * int.from_bytes(data[pos : pos + width])
    raise ValueError(f"0x{b:02x} is not a MessagePack type")


def cut_msgpack(data: bytes, limit: int) -> bytes:
    """``data`` with each array or map that starts deeper than ``limit`` replaced by nil.

    A message that is not one well-formed MessagePack object (truncated, an unknown
    type byte) is returned unchanged: its decoding fails anyway.
    """
    pieces: list[bytes] = []
    last = 0
    open_items: list[int] = []  # items still to read in each open array or map
    skip_from: int | None = None
    skip_level = 0
    pos = 0
    size = len(data)
    try:
        while True:
            start = pos
            fast = _FAST[data[pos]]  # the common case, without a call
            if fast is not None:
                pos, children = pos + 1 + fast[0], fast[1]
            else:
                pos, children = _mp_item(data, pos)
            if pos > size:
                return data
            if children >= 0 and skip_from is None and len(open_items) >= limit:
                skip_from, skip_level = start, len(open_items)
            if children > 0:
                open_items.append(children)
                continue
            while True:  # an item is complete; so may be the containers around it
                if skip_from is not None and len(open_items) == skip_level:
                    pieces += (data[last:skip_from], b"\xc0")
                    last, skip_from = pos, None
                if not open_items:
                    pieces.append(data[last:])
                    return b"".join(pieces)
                open_items[-1] -= 1
                if open_items[-1]:
                    break
                open_items.pop()
    except (IndexError, ValueError):
        return data
