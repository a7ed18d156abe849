"""The hot-document cache behind text merges: bounded, and never different from decoding the stored state."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from syncproto.crdt import text
from syncproto.crdt.text import TextState
from syncproto.crdt.text_cache import MIN_BYTES, DocCache, thread_cache

BASE = "The parcel is at the back door, behind the blue gate. " * 120  # encodes to more than MIN_BYTES


def seeded(client_id: int = 1) -> tuple[Doc[Any], bytes]:
    doc: Doc[Any] = Doc(client_id=client_id)
    update = text.splice(doc, 0, 0, BASE)
    return doc, update


def fresh(state: TextState) -> tuple[str, dict[int, int]]:
    """What a restarted server reads from the stored bytes: no cache involved."""
    doc, t = text.load(state)
    return str(t), text.state_vector(doc.get_state())


def test_the_cache_is_bounded_by_bytes_and_entries_and_evicts_the_least_recently_used() -> None:
    cache = DocCache(max_bytes=5 * MIN_BYTES, max_entries=3)
    keys = [(bytes([i]) * MIN_BYTES,) for i in range(6)]
    for key in keys[:3]:
        cache.put(key, Doc())
    assert cache.peek(keys[0]) is not None  # now the most recently used
    cache.put(keys[3], Doc())
    assert len(cache) == 3
    assert cache.peek(keys[1]) is None  # the least recently used went first
    assert cache.peek(keys[0]) is not None
    for key in keys[4:]:
        cache.put(key, Doc())
    assert len(cache) <= 3
    assert cache.size_bytes <= 5 * MIN_BYTES
    cache.put((b"x" * (3 * MIN_BYTES), b"y" * (3 * MIN_BYTES)), Doc())  # larger than the whole bound: never kept
    assert cache.peek((b"x" * (3 * MIN_BYTES), b"y" * (3 * MIN_BYTES))) is None
    assert cache.size_bytes == sum(len(k[0]) for k in keys if cache.peek(k) is not None)


def test_take_removes_the_entry_and_peek_keeps_it() -> None:
    cache = DocCache()
    key, doc = (b"k" * MIN_BYTES,), Doc()
    cache.put(key, doc)
    assert cache.peek(key) is doc
    assert cache.take(key) is doc
    assert cache.take(key) is None
    assert cache.size_bytes == 0


def test_a_merge_leaves_the_document_cached_under_the_state_it_returns() -> None:
    thread_cache().clear()
    _, update = seeded()
    state = text.apply_update(TextState(), update)
    assert thread_cache().peek(text.cache_key(state)) is not None
    assert text.value(state) == BASE


def test_a_refused_update_does_not_leave_a_half_merged_document_in_the_cache() -> None:
    thread_cache().clear()
    doc, update = seeded()
    state = text.apply_update(TextState(), update)
    # An update that deletes content this state lacks: refused, and its document dropped.
    other: Doc[Any] = Doc(client_id=2)
    other.apply_update(update)
    text.splice(other, 0, 0, "unsent ")  # never pushed
    pending = text.splice(other, 0, 3, "")
    with pytest.raises(text.InvalidTextUpdate):
        text.apply_update(state, pending)
    assert thread_cache().peek(text.cache_key(state)) is None
    # The next merge into the same stored state reads what a restarted server reads.
    after = text.apply_update(state, text.splice(doc, 0, 0, "Note: "))
    assert fresh(after) == (
        text.value(after),
        text.state_vector(thread_cache().peek(text.cache_key(after)).get_state()),
    )  # type: ignore[union-attr]
    assert text.value(after) == "Note: " + BASE
    assert "unsent" not in text.value(after)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 3), st.floats(0, 1), st.integers(0, 4), st.text("abé🚚 ", max_size=5)), max_size=25
    )
)
def test_merging_through_the_cache_equals_decoding_the_stored_state_every_time(
    edits: list[tuple[int, float, int, str]],
) -> None:
    """After any sequence of merges (and a restart, which empties the cache), the
    stored state decodes to the document the cache held."""
    thread_cache().clear()
    docs: dict[int, Doc[Any]] = {}
    _, seed = seeded(client_id=9)
    hot = cold = text.apply_update(TextState(), seed)
    for client, where, delete, insert in edits:
        doc = docs.get(client)
        if doc is None:
            doc = docs[client] = Doc(client_id=client)
        doc.apply_update(text.encoded(hot))
        current = str(doc.get(text.ROOT, type=Text))
        pos = int(where * len(current))
        update = text.splice(doc, pos, min(delete, len(current) - pos), insert)
        hot = text.apply_update(hot, update)
        thread_cache().take(text.cache_key(cold))  # the cold path never finds a document
        cold = text.apply_update(cold, update)
        assert text.value(hot) == text.value(cold)
    cached = thread_cache().peek(text.cache_key(hot))
    thread_cache().clear()  # restart
    value, vector = fresh(hot)
    assert value == text.value(cold)
    if cached is not None:
        assert value == str(cached.get(text.ROOT, type=Text))
        assert vector == text.state_vector(cached.get_state())


def test_merges_into_a_long_text_append_to_its_tail_and_fold_it_once_it_weighs_a_quarter() -> None:
    """A merge keeps the base and appends the update (no whole-document encode per edit); the tail is folded
    into a new base once its bytes exceed a quarter of the base, so a state never holds more than that."""
    thread_cache().clear()
    doc, seed = seeded()
    state = text.apply_update(TextState(), seed)
    assert state.tail == ()  # a first merge into an empty (small) state encodes the whole document
    bases = {state.update}
    tails = []
    for i in range(400):
        state = text.apply_update(state, text.splice(doc, i % 50, 0, "x"))
        bases.add(state.update)
        tails.append(len(state.tail))
        assert sum(map(len, state.tail)) * text.TAIL_FRACTION <= len(state.update) + 64
        assert len(state.tail) <= text.TAIL_MAX_UPDATES
    assert max(tails) > 10  # merges appended rather than re-encoding every time
    assert 2 <= len(bases) < 50  # and the base was encoded again now and then
    assert text.value(state) == str(doc.get(text.ROOT, type=Text))


def test_a_state_with_a_tail_is_stored_read_back_and_sent_whole() -> None:
    """Through msgpack (as the entity row stores it) and a restart (no cache), a state with a tail reads as
    the same text; ``encoded`` gives one update holding everything (what devices receive)."""
    import msgspec

    thread_cache().clear()
    doc, seed = seeded()
    state = text.apply_update(TextState(), seed)
    for i in range(5):
        state = text.apply_update(state, text.splice(doc, i, 0, "é"))
    assert state.tail
    stored = msgspec.msgpack.encode(state)
    thread_cache().clear()  # restart
    back = msgspec.msgpack.decode(stored, type=TextState)
    assert back == state
    assert text.value(back) == str(doc.get(text.ROOT, type=Text))
    device: Doc[Any] = Doc()
    device.apply_update(text.encoded(back))
    assert str(device.get(text.ROOT, type=Text)) == str(doc.get(text.ROOT, type=Text))
    # A state without a tail is stored exactly as before the tail existed.
    assert b"tail" not in msgspec.msgpack.encode(TextState(seed))
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(TextState(seed)), type=TextState).tail == ()
