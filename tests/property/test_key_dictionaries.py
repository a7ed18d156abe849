"""Laws of a key version's trained dictionary (ADR 0034).

Any payload round-trips through compress (against the version's dictionary) + seal + open + decompress;
a tampered compressed ciphertext is detected; a frame made against a dictionary opens only with it; a
dictionary travels sealed under its own key version and nowhere else.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from syncproto.messages import SetOp
from syncserver.keys import dictionary
from syncserver.keys.dictionary import KeyDictionary
from syncserver.keys.envelope import open_sealed, seal
from syncserver.keys.keyring import DecryptionError, TenantCipher, dictionary_aad
from syncserver.sync import compact, payloads
from tests.property.test_sealed_payloads import sealed_change_row


def _delivery(i: int) -> bytes:
    ops = [
        SetOp(field="status", value=("out_for_delivery", "delivered", "failed")[i % 3]),
        SetOp(field="address", value=f"Villa {i % 900}, Street {i % 77}, Al Barsha 1, Dubai, United Arab Emirates"),
        SetOp(field="driver_id", value=f"driver-{i % 200:03d}"),
        SetOp(field="eta", value=f"2026-12-06T1{i % 10}:30:00Z"),
    ]
    return payloads.encode_ops(list[Any](ops))


TRAINED = dictionary.train([_delivery(i) for i in range(400)])
DICT = KeyDictionary(TRAINED)
KEY = AESGCM.generate_key(bit_length=256)
CIPHER = TenantCipher("acme", {1: AESGCM(KEY)}, 1, {1: os.urandom(32)}, {1: DICT})

bodies = st.one_of(
    st.binary(max_size=4096),
    st.builds(lambda piece, times: piece * times, st.binary(min_size=1, max_size=40), st.integers(1, 200)),
    st.integers(0, 10_000).map(_delivery),
)


@given(bodies)
def test_a_frame_against_the_dictionary_round_trips_any_body(body: bytes) -> None:
    framed = compact.frame(body, DICT)
    assert compact.unframe(framed, DICT) == (True, body)
    assert len(framed) <= len(body) + 2


@given(bodies, st.text(max_size=30))
def test_compress_seal_open_decompress_round_trips(body: bytes, row: str) -> None:
    version, sealed = CIPHER.seal("changes", row, payloads.frame(CIPHER, body))
    assert payloads.unframe(CIPHER, version, CIPHER.open("changes", row, version, sealed)) == body


@given(st.integers(0, 10_000).map(_delivery), st.data())
def test_a_tampered_compressed_ciphertext_is_detected(body: bytes, data: st.DataObject) -> None:
    version, sealed = CIPHER.seal("changes", "deliveries/d1@7", payloads.frame(CIPHER, body))
    assert compact.unframe(CIPHER.open("changes", "deliveries/d1@7", version, sealed), DICT)[1] == body
    at = data.draw(st.integers(0, len(sealed) - 1))
    tampered = bytearray(sealed)
    tampered[at] ^= data.draw(st.integers(1, 255))
    with pytest.raises(DecryptionError):
        CIPHER.open("changes", "deliveries/d1@7", version, bytes(tampered))


@settings(max_examples=50)
@given(st.integers(0, 10_000).map(_delivery))
def test_a_frame_needs_its_own_versions_dictionary(body: bytes) -> None:
    framed = compact.frame(body, DICT)
    assert framed[1] == compact.ZSTD_TENANT
    with pytest.raises(DecryptionError):  # a FrameError: quarantined like any cell that does not open
        compact.unframe(framed)


def test_the_trained_dictionary_shrinks_what_the_built_in_one_leaves() -> None:
    samples = [_delivery(i) for i in range(1000, 1200)]
    built_in = sum(len(compact.frame(b)) for b in samples)
    trained = sum(len(compact.frame(b, DICT)) for b in samples)
    assert trained < built_in / 2, (trained, built_in)


def test_ops_sealed_under_a_version_with_a_dictionary_read_back_and_chain_the_same_bytes() -> None:
    plaintext = _delivery(7)
    version, sealed = payloads.seal_ops(CIPHER, "deliveries", "d1", 7, b"\x01" * 32, plaintext)
    row = sealed_change_row(version, sealed)
    assert payloads.open_ops_plaintext(CIPHER, row) == plaintext  # what the chain hashes: the body, not the frame
    # The same cipher without the dictionary cannot read it (and says so, as a DecryptionError).
    bare = TenantCipher("acme", {1: AESGCM(KEY)}, 1, {1: os.urandom(32)})
    with pytest.raises(DecryptionError):
        payloads.open_ops_plaintext(bare, row)


def test_too_few_samples_train_nothing() -> None:
    with pytest.raises(dictionary.TrainingError):
        dictionary.train([b"x" * 100] * (dictionary.MIN_SAMPLES - 1))


def test_a_dictionary_is_sealed_under_its_own_version_only() -> None:
    blob = seal(AESGCM(KEY), TRAINED, dictionary_aad("acme", 1))
    other = AESGCM(AESGCM.generate_key(bit_length=256))
    assert open_sealed(AESGCM(KEY), blob, dictionary_aad("acme", 1)) == TRAINED
    with pytest.raises(DecryptionError):
        open_sealed(AESGCM(KEY), blob, dictionary_aad("acme", 2))  # moved to another version
    with pytest.raises(DecryptionError):
        open_sealed(AESGCM(KEY), blob, dictionary_aad("globex", 1))  # moved to another tenant
    with pytest.raises(DecryptionError):
        open_sealed(other, blob, dictionary_aad("acme", 1))  # another key
    assert repr(DICT) == f"KeyDictionary({len(TRAINED)} bytes)"  # never its contents


def test_zstd_contexts_are_kept_for_a_bounded_number_of_dictionaries_and_rebuilt_after() -> None:
    many = [KeyDictionary(TRAINED + i.to_bytes(4, "big")) for i in range(dictionary.CODECS + 20)]
    frames = [d.compress(_delivery(i)) for i, d in enumerate(many)]
    assert dictionary._codec_of.cache_info().currsize <= dictionary.CODECS
    # The first ones fell out of the cache; they are rebuilt and read what they wrote.
    assert [d.decompress(f, 1 << 20) for d, f in zip(many, frames, strict=True)] == [
        _delivery(i) for i in range(len(many))
    ]
