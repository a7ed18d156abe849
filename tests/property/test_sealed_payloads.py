"""Laws of sealed payloads: any payload round-trips through frame (compress) + seal + open + unframe, any
change to the sealed bytes is detected, and every entity state round-trips through its framed encoding.

Rows written before the frame existed (plain msgpack) still read, and the frozen dictionary never changes.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from syncproto.crdt import AWSet, Counter, Log, LogEntry, Register, Sibling, TextState
from syncproto.merge import EntityState, Mark
from syncproto.messages import ConflictValue, SetOp
from syncproto.vv import Dot
from syncserver.keys.envelope import open_sealed, row_aad
from syncserver.keys.keyring import DecryptionError, TenantCipher
from syncserver.sync import compact, payloads
from syncstore.records import ChangeRecord, EntityRecord
from tests.property.sim import related_states

CIPHER = TenantCipher("acme", {1: AESGCM(AESGCM.generate_key(bit_length=256))}, 1, {1: os.urandom(32)})

bodies = st.one_of(
    st.binary(max_size=4096),
    # compressible: repeated text, as payloads are
    st.builds(lambda piece, times: piece * times, st.binary(min_size=1, max_size=40), st.integers(1, 200)),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(bodies)
def test_frame_round_trips_any_body(body: bytes) -> None:
    framed = compact.frame(body)
    assert framed[0] == compact.MAGIC
    assert compact.unframe(framed) == (True, body)
    assert len(framed) <= len(body) + 2


@given(bodies, st.text(max_size=30))
def test_seal_of_a_frame_round_trips(body: bytes, row: str) -> None:
    version, sealed = CIPHER.seal("changes", row, compact.frame(body))
    assert compact.unframe(CIPHER.open("changes", row, version, sealed))[1] == body


@given(bodies, st.data())
def test_tampered_compressed_ciphertext_is_detected(body: bytes, data: st.DataObject) -> None:
    version, sealed = CIPHER.seal("changes", "deliveries/d1@7", compact.frame(body))
    at = data.draw(st.integers(0, len(sealed) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = bytearray(sealed)
    tampered[at] ^= flip
    with pytest.raises(DecryptionError):
        CIPHER.open("changes", "deliveries/d1@7", version, bytes(tampered))
    with pytest.raises(DecryptionError):
        CIPHER.open("changes", "deliveries/d1@7", version, sealed[: data.draw(st.integers(0, len(sealed) - 1))])


@given(st.lists(json_values, max_size=6))
def test_ops_round_trip_to_the_bytes_the_chain_hashes(values: list[Any]) -> None:
    ops: list[Any] = [SetOp(field=f"f{i}", value=v) for i, v in enumerate(values)]
    plaintext = payloads.encode_ops(ops)
    version, sealed = payloads.seal_ops(CIPHER, "deliveries", "d1", 7, b"\x01" * 32, plaintext)
    row = sealed_change_row(version, sealed)
    assert payloads.open_ops_plaintext(CIPHER, row) == plaintext
    assert payloads.open_ops(CIPHER, row) == ops


@given(related_states(count=1), st.dictionaries(st.text(max_size=6), st.integers(0, 2**40), max_size=5))
def test_entity_state_round_trips_through_its_framed_encoding(states: list[EntityState], seqs: dict[str, int]) -> None:
    state = states[0]
    field_seq = {**{name: i + 1 for i, name in enumerate(state.fields)}, **seqs}
    stored = payloads.StoredEntity(state, field_seq)
    assert payloads.decode_entity(payloads.encode_entity(stored)) == stored


def test_every_field_kind_round_trips_and_the_dictionary_shrinks_a_state() -> None:
    hlc = (1_765_000_000_000, 3)
    state = EntityState(
        {"phone-1": 4, "desk": 2},
        {
            "status": Register([Sibling("failed", "phone-1", 4, hlc, "drv"), Sibling("delivered", "desk", 2, hlc, "")]),
            "cod": Counter({"phone-1": (3, 2**64 - 1, 5)}),
            "tags": AWSet({"fragile": [Dot("phone-1", 1), Dot("desk", 2)], "": []}),
            "notes": TextState(b"\x01\x02\x00"),
            "trail": Log([LogEntry(hlc, "phone-1", 2, 0, {"lat": 25.1}), LogEntry(hlc, "desk", 1, 1, None)]),
            "empty": Register(),
        },
        [Mark("phone-1", 4, hlc, "drv")],
        [Mark("desk", 2, hlc, "disp")],
    )
    stored = payloads.StoredEntity(state, {"status": 9, "cod": 8, "gone": 3})
    framed = payloads.encode_entity(stored)
    assert payloads.decode_entity(framed) == stored
    # The keys and tags every state repeats are in the dictionary: well under half the msgpack.
    assert framed[1] == compact.ZSTD_DICT_1
    assert len(framed) < len(msgspec.msgpack.encode(stored)) / 2


def test_rows_written_before_the_frame_still_read() -> None:
    hlc = (1_765_000_000_000, 0)
    stored = payloads.StoredEntity(
        EntityState({"p": 1}, {"status": Register([Sibling("new", "p", 1, hlc, "u")])}, [Mark("p", 1, hlc, "u")]),
        {"status": 1},
    )
    legacy_state = msgspec.msgpack.encode(stored)
    version, blob = CIPHER.seal("entities", payloads.entity_row("deliveries", "d1", 1, b"\x02" * 32), legacy_state)
    row = EntityRecord("deliveries", "d1", 1, False, version, blob, {"p": 1}, 0, chain=b"\x02" * 32)
    assert payloads.open_entity(CIPHER, row) == stored

    legacy_ops = msgspec.msgpack.encode(payloads.StoredOps([SetOp(field="status", value="new")]))
    version, sealed = CIPHER.seal("changes", payloads.change_row("deliveries", "d1", 7, b"\x01" * 32), legacy_ops)
    assert payloads.open_ops_plaintext(CIPHER, sealed_change_row(version, sealed)) == legacy_ops

    conflict = payloads.StoredConflict([ConflictValue("a", "p", 1, "u", hlc)], None, "note")
    version, sealed = CIPHER.seal("conflicts", payloads.conflict_row("c", "e", 3, 0), msgspec.msgpack.encode(conflict))
    assert payloads.open_conflict(CIPHER, "c", "e", 3, 0, version, sealed) == conflict

    raw = {"id": "x", "ops": [{"op": "set"}]}
    version, sealed = CIPHER.seal("dead_letters", payloads.dead_letter_row("p", 4, "x"), msgspec.msgpack.encode(raw))
    assert payloads.open_dead_letter(CIPHER, "p", 4, "x", version, sealed) == raw


@given(json_values)
def test_dead_letters_of_any_shape_round_trip(raw: Any) -> None:
    version, sealed = payloads.seal_dead_letter(CIPHER, "p", 4, "x", raw)
    assert payloads.open_dead_letter(CIPHER, "p", 4, "x", version, sealed) == raw


def test_an_unknown_frame_format_is_refused_not_misread() -> None:
    # A DecryptionError, so read paths quarantine the cell as they do any cell that does not open.
    with pytest.raises(DecryptionError):
        compact.unframe(bytes((compact.MAGIC, 0x7F)) + b"later")
    with pytest.raises(DecryptionError):
        compact.unframe(bytes((compact.MAGIC, compact.ZSTD_DICT_1)) + b"not zstd")
    with pytest.raises(DecryptionError):
        payloads.decode_entity(bytes((compact.MAGIC, compact.RAW)) + msgspec.msgpack.encode([["p"], [0, 1]]))


def test_dictionary_1_is_frozen() -> None:
    # Rows compressed against it exist on disk: a changed byte would make them unreadable.
    digest = hashlib.sha256(compact.DICTIONARY_1).hexdigest()
    assert digest == "12169eaf1a18e1e69903927dac11a8f97836cde35f5bfb21862f599525fbca22"


def sealed_change_row(version: int, sealed: bytes) -> ChangeRecord:
    """The change row (seq 7 of "deliveries/d1", chain link 0x01...) holding ``sealed``."""
    return ChangeRecord(
        seq=7,
        change_id="c7",
        collection="deliveries",
        entity_id="d1",
        replica_id="p",
        n=1,
        hlc=(1, 0),
        user="u",
        context={},
        key_version=version,
        payload=sealed,
        created_at=0,
        chain=b"\x01" * 32,
    )


_ids = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), min_size=1, max_size=30)


@given(table=_ids, row=_ids, version=st.integers(1, 3), body=st.binary(max_size=64))
def test_a_cipher_seals_under_the_documented_associated_data(table: str, row: str, version: int, body: bytes) -> None:
    """The cipher keeps ``row_aad``'s constant parts per table and version: what it seals opens under
    ``row_aad`` itself (what the verify and key tools use), and under no other row."""
    keys = {v: AESGCM(AESGCM.generate_key(bit_length=256)) for v in (1, 2, 3)}
    cipher = TenantCipher("acme", keys, version)
    _, sealed = cipher.seal(table, row, body)
    assert open_sealed(keys[version], sealed, row_aad("acme", table, row, version)) == body
    with pytest.raises(DecryptionError):
        open_sealed(keys[version], sealed, row_aad("acme", table, row + "x", version))
