"""Properties of the packed change-log columns (ADR 0039): a change id and a causal context read back
exactly as they were written, whatever they are, and the forms the SDKs send are the ones packed."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from syncstore import rows

replica_ids = st.from_regex(r"[A-Za-z0-9._:@\-]{1,40}", fullmatch=True)
counters = st.integers(min_value=0, max_value=2**53)
contexts = st.dictionaries(replica_ids, counters, max_size=6)


@given(st.text(max_size=64))
def test_any_change_id_reads_back_as_it_was_written(change_id: str) -> None:
    assert rows.unpack_change_id(*rows.pack_change_id(change_id)) == change_id


@given(st.uuids(), st.booleans())
def test_a_canonical_uuid_is_stored_as_its_16_bytes(value: uuid.UUID, dashed: bool) -> None:
    change_id = str(value) if dashed else value.hex
    column, raw = rows.pack_change_id(change_id)
    assert raw == value.bytes
    assert len(column) <= 1
    assert rows.unpack_change_id(column, raw) == change_id


@given(st.uuids())
def test_an_uppercase_uuid_is_kept_as_text(value: uuid.UUID) -> None:
    change_id = str(value).upper()
    if change_id != str(value):  # not only digits
        assert rows.pack_change_id(change_id) == (change_id, None)


@given(contexts, replica_ids, counters)
def test_any_context_reads_back_as_it_was_written(context: dict[str, int], replica: str, n: int) -> None:
    stored = rows.pack_context(context, replica, n)
    assert rows.unpack_context(stored, replica, n) == context
    assert list(rows.unpack_context(stored, replica, n)) == sorted(context)


@given(contexts, replica_ids, st.integers(min_value=1, max_value=2**53))
def test_the_own_replica_is_not_stored_again(context: dict[str, int], replica: str, n: int) -> None:
    context[replica] = n - 1  # the device's previous change: what almost every change's context holds
    stored = rows.pack_context(context, replica, n)
    assert f'"{replica}"' not in stored
    assert stored.startswith('{"":1')


@given(contexts)
def test_a_context_stored_before_packing_reads_as_it_was(context: dict[str, int]) -> None:
    assert rows.unpack_context(rows.encode_counters(context), "any-replica", 5) == context
