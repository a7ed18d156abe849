"""Collaborative text: users count code points, Yjs counts UTF-8 bytes."""

from __future__ import annotations

import base64
import gc
import weakref
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from syncproto.crdt import text
from syncproto.crdt.text import TextState
from syncproto.merge import EntityState, apply_change
from syncproto.messages import Change, TextOp
from tests.property.sim import ENTITY, make_collection, text_doc

# Multi-byte text: é (2 bytes), CJK (3 bytes), emoji (4 bytes), and a combining accent.
chars = st.sampled_from(["a", "b", " ", "é", "ü", "中", "文", "😀", "🚚", "e\u0301"])
texts = st.lists(chars, max_size=12).map("".join)
any_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)


@st.composite
def edits_of(draw: st.DrawFn, base: str) -> tuple[int, int, str]:
    pos = draw(st.integers(0, len(base)))
    delete = draw(st.integers(0, len(base) - pos))
    return pos, delete, draw(texts)


@given(any_text, st.data())
def test_utf8_offset_is_the_byte_length_of_the_prefix(s: str, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(s)))
    assert text.utf8_offset(s, i) == len(s[:i].encode("utf-8"))


@given(any_text, st.one_of(st.integers(max_value=-1), st.integers(min_value=1).map(lambda k: -k)))
def test_utf8_offset_refuses_positions_outside_the_text(s: str, outside: int) -> None:
    for pos in (outside, len(s) - outside):
        with pytest.raises(IndexError):
            text.utf8_offset(s, pos)


def _doc(base: bytes, client_id: int) -> Doc[Any]:
    return text_doc(TextState(base), client_id)


@given(st.data(), texts)
def test_splice_edits_at_code_point_positions(data: st.DataObject, base: str) -> None:
    seed: Doc[Any] = Doc(client_id=1)
    seed_text = seed.get(text.ROOT, type=Text)
    seed_text += base
    doc = _doc(seed.get_update(), 2)
    pos, delete, insert = data.draw(edits_of(base))
    text.splice(doc, pos, delete, insert)
    assert str(doc.get(text.ROOT, type=Text)) == base[:pos] + insert + base[pos + delete :]


@given(st.data(), texts)
def test_concurrent_splices_converge_after_exchanging_updates(data: st.DataObject, base: str) -> None:
    """Two replicas edit one text concurrently at code-point positions; after each
    applies the other's update (directly, or through the server's TextState) they agree,
    and neither insert is split or lost."""
    seed: Doc[Any] = Doc(client_id=1)
    seed_text = seed.get(text.ROOT, type=Text)
    seed_text += base
    common = seed.get_update()
    a, b = _doc(common, 2), _doc(common, 3)
    (pa, da, ia), (pb, db, ib) = data.draw(edits_of(base)), data.draw(edits_of(base))
    ua, ub = text.splice(a, pa, da, ia), text.splice(b, pb, db, ib)
    a.apply_update(ub)
    b.apply_update(ua)
    merged = str(a.get(text.ROOT, type=Text))
    assert merged == str(b.get(text.ROOT, type=Text))

    deleted = set(range(pa, pa + da)) | set(range(pb, pb + db))
    kept = "".join(c for i, c in enumerate(base) if i not in deleted)
    assert len(merged) == len(kept) + len(ia) + len(ib)
    assert ia in merged
    assert ib in merged

    # The server's path: base64 updates applied by ``apply_change`` in either order.
    collection = make_collection()
    start = EntityState(fields={"body": TextState(common)})
    change_a = Change("a1", 1, "jobs", ENTITY, (1, 0), {}, [TextOp("body", base64.b64encode(ua).decode())])
    change_b = Change("b1", 1, "jobs", ENTITY, (1, 0), {}, [TextOp("body", base64.b64encode(ub).decode())])
    for first, second in ((("a", change_a), ("b", change_b)), (("b", change_b), ("a", change_a))):
        state = apply_change(start, first[1], first[0], collection).state
        state = apply_change(state, second[1], second[0], collection).state
        body = state.fields["body"]
        assert isinstance(body, TextState)
        assert text.value(body) == merged


@given(texts, texts)
def test_an_update_that_builds_on_missing_edits_is_refused_not_dropped(first: str, second: str) -> None:
    """Yjs keeps such an update "pending" and leaves it out of the state it encodes;
    refusing it keeps the edit from vanishing while the change is reported applied."""
    doc: Doc[Any] = Doc(client_id=7)
    t = doc.get(text.ROOT, type=Text)
    t += first or "x"
    before = doc.get_state()
    t += second or "y"
    later = doc.get_update(before)
    with pytest.raises(text.InvalidTextUpdate):
        text.apply_update(TextState(), later)
    # With what it builds on, it applies; and applying it twice changes nothing.
    whole = text.apply_update(TextState(), doc.get_update())
    again = text.apply_update(whole, later)
    assert text.value(again) == text.value(whole) == (first or "x") + (second or "y")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.integers(0, 3), texts), min_size=1, max_size=60), st.floats(0, 1))
def test_a_one_character_splice_is_small_whatever_the_history(history: list[tuple[float, int, str]], at: float) -> None:
    """The update of a splice is its own transaction, not a diff that drags the
    document's whole delete set along: after any history of scattered edits, one
    typed character costs at most 64 bytes on the wire, and it still merges."""
    doc: Doc[Any] = Doc(client_id=5)
    text.splice(doc, 0, 0, "abcdefghij" * 10)
    for k in range(40):  # every other character, one edit each: a delete set of 40 separate ranges
        text.splice(doc, k, 1, "")
    for where, delete, insert in history:
        current = str(doc.get(text.ROOT, type=Text))
        pos = int(where * len(current))
        text.splice(doc, pos, min(delete, len(current) - pos), insert)
    peer: Doc[Any] = Doc(client_id=6)
    peer.apply_update(doc.get_update())
    current = str(doc.get(text.ROOT, type=Text))
    pos = int(at * len(current))
    update = text.splice(doc, pos, 0, "é")
    assert len(update) <= 64
    peer.apply_update(update)
    assert str(peer.get(text.ROOT, type=Text)) == current[:pos] + "é" + current[pos:]
    server = text.apply_update(text.apply_update(TextState(), doc.get_update()), update)
    assert text.value(server) == current[:pos] + "é" + current[pos:]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(0, 1), st.integers(0, 3), texts), min_size=1, max_size=40))
def test_splice_edits_the_current_text_after_any_remote_update(steps: list[tuple[bool, float, int, str]]) -> None:
    """``splice`` keeps the text between calls; a remote update in between (inserts, or deletes
    only) must never leave it editing a stale copy."""
    mine: Doc[Any] = Doc(client_id=21)
    theirs: Doc[Any] = Doc(client_id=22)
    text.splice(theirs, 0, 0, "shared start ")
    mine.apply_update(theirs.get_update())
    for remote, where, delete, insert in steps:
        doc = theirs if remote else mine
        current = str(doc.get(text.ROOT, type=Text))
        pos = int(where * len(current))
        delete = min(delete, len(current) - pos)
        update = text.splice(doc, pos, delete, insert)
        assert str(doc.get(text.ROOT, type=Text)) == current[:pos] + insert + current[pos + delete :]
        (mine if remote else theirs).apply_update(update)
        assert str(mine.get(text.ROOT, type=Text)) == str(theirs.get(text.ROOT, type=Text))


ascii_texts = st.lists(st.sampled_from(["a", "b", " ", "\n"]), max_size=12).map("".join)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.integers(-1, 4), st.one_of(ascii_texts, texts)), min_size=1, max_size=60))
def test_splice_follows_a_text_in_and_out_of_ascii(steps: list[tuple[float, int, str]]) -> None:
    """``splice`` keeps no string for an ASCII text (code points are bytes there) and a string
    otherwise: long runs of ASCII edits, a non-ASCII insert, deleting it again, and positions
    outside the text (refused with ``IndexError``, the document unchanged) all edit exactly."""
    doc: Doc[Any] = Doc(client_id=31)
    peer: Doc[Any] = Doc(client_id=32)
    expected = ""
    for where, delete, insert in steps:
        pos = int(where * (len(expected) + 1)) if delete >= 0 else len(expected) + 1
        if delete < 0 or pos + delete > len(expected):
            with pytest.raises(IndexError):
                text.splice(doc, pos, max(delete, 0) + len(expected), insert)
            assert str(doc.get(text.ROOT, type=Text)) == expected
            continue
        update = text.splice(doc, pos, delete, insert)
        expected = expected[:pos] + insert + expected[pos + delete :]
        assert str(doc.get(text.ROOT, type=Text)) == expected
        peer.apply_update(update)
        assert str(peer.get(text.ROOT, type=Text)) == expected


def test_local_splices_never_read_the_whole_text_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading a long Y.Text into a string walks the whole document: after the first splice, a run
    of local edits (ASCII or not) reads it only when the text stops being ASCII, and a remote
    update in between makes the next splice read it once."""
    doc: Doc[Any] = Doc(client_id=41)
    text.splice(doc, 0, 0, "delivered to the back door")
    reads: list[int] = []
    plain = Text.__str__

    def counted(self: Text) -> str:
        reads.append(1)
        return plain(self)

    monkeypatch.setattr(Text, "__str__", counted)
    for k in range(50):
        text.splice(doc, k % 7, 1, "xy")
    assert reads == []
    text.splice(doc, 3, 0, "é")  # the text stops being ASCII: one read, then a kept string
    for k in range(50):
        text.splice(doc, k % 5, 1, "ü")
    assert len(reads) == 1
    peer: Doc[Any] = Doc(client_id=42)
    peer.apply_update(doc.get_update())
    peer.get(text.ROOT, type=Text).insert(0, "remote ")
    doc.apply_update(peer.get_update(doc.get_state()))
    text.splice(doc, 0, 0, "!")
    assert len(reads) == 2
    assert plain(doc.get(text.ROOT, type=Text)).startswith("!remote ")


def test_splice_keeps_no_document_alive() -> None:
    """The SDK splices into a fresh document per edit: none of them may outlive its user."""
    refs = []
    for _ in range(50):
        doc: Doc[Any] = Doc()
        text.splice(doc, 0, 0, "note")
        refs.append(weakref.ref(doc))
    del doc
    gc.collect()
    assert [r for r in refs if r() is not None] == []
