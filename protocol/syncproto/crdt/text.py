"""Collaborative text: a Yjs document (via pycrdt) whose root ``Y.Text`` is named ``text``.

Yjs text positions count UTF-8 bytes; users count code points. The helpers
here convert, so callers never pass a byte offset by accident.
"""

from __future__ import annotations

import base64
import binascii
import weakref
from typing import Any

import pycrdt
from msgspec import Struct
from pycrdt import Decoder, Doc, Text

from syncproto.crdt.text_cache import MIN_BYTES, thread_cache

ROOT = "text"


class InvalidTextUpdate(ValueError):
    """The bytes are not a decodable Yjs update."""


class TextState(Struct, gc=False, omit_defaults=True, tag="text", tag_field="kind"):
    """A text field's document: a base state and the updates merged into it since (its update log).

    Encoding a whole document costs time in its length (0.46 ms at 290 KB), so a merge appends the
    update to ``tail`` instead and the base is encoded again only once the tail weighs a quarter of it
    (``needs_fold``). The document is the base with every tail update applied (Yjs updates are
    idempotent and commute); ``encoded`` gives it as one update, as devices receive it. A state
    without a tail encodes exactly as before the tail existed (``omit_defaults``).
    """

    update: bytes = b""
    """The base: the document state encoded as one Yjs v1 update."""
    tail: tuple[bytes, ...] = ()
    """Yjs updates merged since the base was encoded, in the order they were merged."""


TAIL_FRACTION = 4
"""The tail is folded into the base once its bytes exceed the base's divided by this."""
TAIL_MAX_UPDATES = 256
"""... or once it holds more updates than this (a cold merge replays them all)."""


def needs_fold(base: bytes, tail: tuple[bytes, ...]) -> bool:
    """Whether a state of ``base`` and ``tail`` should be stored as one encoded base instead.

    Small documents always are: encoding them is cheap, and they are not cached (``MIN_BYTES``),
    so a tail would be replayed on every merge.
    """
    if not tail:
        return False
    if len(base) < MIN_BYTES or len(tail) > TAIL_MAX_UPDATES:
        return True
    return sum(map(len, tail)) * TAIL_FRACTION > len(base)


def cache_key(state: TextState) -> tuple[bytes, ...]:
    """The key of ``state``'s decoded document in the thread's ``DocCache``."""
    return (state.update, *state.tail)


def load(state: TextState) -> tuple[Doc[Any], Text]:
    doc: Doc[Any] = Doc()
    text = doc.get(ROOT, type=Text)
    if state.update:
        doc.apply_update(state.update)
    for update in state.tail:
        doc.apply_update(update)
    return doc, text


def encoded(state: TextState) -> bytes:
    """The whole document as one Yjs v1 update (the base with its tail folded in), as devices receive it."""
    if not state.tail:
        return state.update
    doc = thread_cache().peek(cache_key(state))
    return (doc if doc is not None else load(state)[0]).get_update()


def decode_update(encoded: str) -> bytes:
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidTextUpdate("text update is not valid base64") from exc


def apply_update(state: TextState, update: bytes) -> TextState:
    """Merge one Yjs update. Idempotent and commutative (Yjs guarantees both).

    An update that builds on edits this state lacks is refused, whether it
    inserts after them or deletes them: Yjs would hold the missing part as
    "pending" (structs or a delete set) and ``get_update`` would silently leave
    it out, so the stored text would lose part of an accepted update. The check
    runs on the document after applying. With the server's per-replica counter
    order an honest client never sends one.
    """
    cache = thread_cache()
    doc = cache.take(cache_key(state)) if state.update or state.tail else None
    if doc is None:
        doc, _ = load(state)
    try:
        doc.apply_update(update)
    except ValueError as exc:
        raise InvalidTextUpdate(f"text update cannot be decoded: {exc}") from exc
    # What the document still lacks of the update, as an update: the structs it
    # could not integrate (a varuint count of clients first, 0 when none), then the
    # update's whole delete set (a diff always carries the delete set in full).
    reader = Decoder(pycrdt.get_update(update, doc.get_state()))
    if reader.read_var_uint() != 0:
        raise InvalidTextUpdate("text update depends on edits of this text that the server has not received")
    known = state_vector(doc.get_state())
    for client, clock, length in _delete_set(reader):
        if clock + length > known.get(client, 0):
            raise InvalidTextUpdate("text update deletes edits of this text that the server has not received")
    tail = (*state.tail, update)
    merged = TextState(doc.get_update()) if needs_fold(state.update, tail) else TextState(state.update, tail)
    cache.put(cache_key(merged), doc)  # only now: a refused update's half-merged document is dropped above
    return merged


def state_vector(encoded: bytes) -> dict[int, int]:
    """Decode a Yjs state vector: client id -> the next clock it has not sent yet."""
    reader = Decoder(encoded)
    return {reader.read_var_uint(): reader.read_var_uint() for _ in range(reader.read_var_uint())}


def _delete_set(reader: Decoder) -> list[tuple[int, int, int]]:
    """Read a Yjs v1 delete set: ``(client, clock, length)`` ranges."""
    ranges: list[tuple[int, int, int]] = []
    for _ in range(reader.read_var_uint()):
        client = reader.read_var_uint()
        ranges.extend((client, reader.read_var_uint(), reader.read_var_uint()) for _ in range(reader.read_var_uint()))
    return ranges


def join(a: TextState, b: TextState) -> TextState:
    return apply_update(a, encoded(b)) if b.update or b.tail else a


def value(state: TextState) -> str:
    doc = thread_cache().peek(cache_key(state)) if state.update or state.tail else None
    return str(doc.get(ROOT, type=Text)) if doc is not None else str(load(state)[1])


def utf8_offset(s: str, codepoints: int) -> int:
    """Byte offset in UTF-8 of the code-point index ``codepoints`` of ``s``."""
    if codepoints < 0 or codepoints > len(s):
        raise IndexError(f"position {codepoints} is outside text of length {len(s)}")
    return len(s[:codepoints].encode("utf-8"))


class _Mirror(Struct, gc=False):
    """What ``splice`` keeps of a document between splices (see ``_mirrors``)."""

    state: bytes
    """The document's state vector right after the splice."""
    length: int
    """``len(text)`` right after the splice: UTF-8 bytes, as Yjs counts."""
    value: str | None
    """The text right after the splice; ``None`` when it is ASCII (then ``length`` code points long)."""


# The text of each document as a Python string, kept between splices: reading a long
# Y.Text into a string walks the whole document and costs more than the edit itself.
# An entry is used only while the document still has the state vector and length it
# had after the splice that stored it: any other insert changes the state vector, and
# a delete-only update changes the length. Weak keys: a document is not kept alive,
# and no observer stays on it (pycrdt keeps an observed document alive). An ASCII text
# keeps no string at all: positions are byte offsets, and copying a long string on
# every keystroke would cost more than the edit.
_mirrors: weakref.WeakKeyDictionary[Doc[Any], _Mirror] = weakref.WeakKeyDictionary()


def _offsets(current: str | None, length: int, pos: int, delete: int) -> tuple[int, int]:
    """UTF-8 ``(start, end)`` of ``delete`` code points at ``pos`` (``current`` ``None``: ASCII, ``length`` long)."""
    if current is not None:
        start = utf8_offset(current, pos)
        return start, utf8_offset(current, pos + delete) if delete else start
    for at in (pos, pos + delete):
        if at < 0 or at > length:
            raise IndexError(f"position {at} is outside text of length {length}")
    return pos, pos + delete


def splice(doc: Doc[Any], pos: int, delete: int, insert: str) -> bytes:
    """Edit the text at code-point ``pos``: delete ``delete`` code points, then insert.

    Returns the Yjs update of this edit's own transaction, ready to push. A diff
    against the state before (``get_update(before)``) would carry the document's
    whole delete set, so a one-character splice late in a long edit history would
    weigh kilobytes; the transaction's update holds only what it inserted and deleted.

    Every pycrdt call opens a transaction of its own, so this makes as few as it can: the
    current text and the length after the edit come from the mirror kept by the previous
    splice (checked against the document's state vector and length). The mirror holds no
    pycrdt object: a ``Text`` refers to its document and would keep the weak key alive.
    """
    text = doc.get(ROOT, type=Text)
    updates: list[bytes] = []
    subscription = doc.observe(lambda event: updates.append(event.update))
    try:
        # One transaction for the reads and the edit: pycrdt calls inside it join it, where each
        # would otherwise open and commit its own. Only the edit's writes make the update.
        with doc.transaction():
            length = len(text)
            kept = _mirrors.get(doc)
            current: str | None
            if kept is not None and kept.length == length and kept.state == doc.get_state():
                current = kept.value
            else:
                current = str(text)
                current = None if current.isascii() else current  # isascii is O(1) in CPython
            start, end = _offsets(current, length, pos, delete)
            if delete:
                del text[start:end]
            if insert:
                text.insert(start, insert)
            after = doc.get_state()
    finally:
        doc.unobserve(subscription)
    edited: str | None
    if current is None:
        edited = None if insert.isascii() else str(text)  # a walk only when the text stops being ASCII
    else:
        edited = current[:pos] + insert + current[pos + delete :]
        edited = None if edited.isascii() else edited
    # Our own transaction removed [start, end) and inserted ``insert``: the new length needs no read.
    _mirrors[doc] = _Mirror(after, length - (end - start) + len(insert.encode("utf-8")), edited)
    # No update when the edit changed nothing; the diff from the (unchanged) state is then empty.
    return updates[0] if updates else doc.get_update(after)
