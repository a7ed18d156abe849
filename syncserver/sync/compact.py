"""The frame every sealed plaintext is written in: compressed against a built-in dictionary.

Every sealed plaintext written by this release starts with a frame header; rows
written before it are plain msgpack and still read:

* ``0xC1 0x01`` + body: the body as is (too small for compression to pay);
* ``0xC1 0x02`` + a zstd frame of the body, compressed against ``DICTIONARY_1``;
* ``0xC1 0x03`` + a zstd frame of the body, compressed against the dictionary of the key version
  the plaintext is sealed under (``syncserver.keys.dictionary``, ADR 0034): trained on the
  tenant's own payloads, so it removes the values that repeat as well as the keys;
* anything else: a legacy row, the whole plaintext is the body (msgpack).

``0xC1`` is the one byte msgpack never uses, so no legacy plaintext starts with
it. The second byte names the format for good: a later dictionary or codec takes
a new number and every number ever written keeps its meaning, so no row ever
becomes unreadable. The frame lives inside the sealed plaintext (compress, then
seal), so the associated data, key rotation and the integrity chain (which
hashes the *body*, never the frame) do not see it.

The bodies stay the msgpack the server always wrote (named structs): the
dictionary holds their keys and tags, so zstd removes most of what a positional
encoding would, and decoding stays msgspec's (ADR 0029).
"""

from __future__ import annotations

import base64

import zstandard

from syncserver.keys.dictionary import KeyDictionary
from syncserver.keys.envelope import DecryptionError

MAGIC = 0xC1
RAW = 0x01
ZSTD_DICT_1 = 0x02
ZSTD_TENANT = 0x03
MIN_COMPRESS = 64
"""Bodies shorter than this are framed as ``RAW``: a zstd frame header costs more than it could save."""
MAX_BODY = 64 * 1024 * 1024
"""The largest body a frame may expand to (a sealed plaintext is authenticated, so this only bounds a bug)."""

# A raw-content dictionary: msgpack of the keys and tags every stored payload repeats (ops, conflicts,
# dead letters, and an entity state with one field of each kind; generic values, no tenant's data).
# Frozen with format ZSTD_DICT_1: never edit it (a test pins its SHA-256); a better dictionary is a new
# format number.
DICTIONARY_1 = base64.b64decode(
    "h6JpZLowMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMKFuAapjb2xsZWN0aW9uqmRlbGl2ZXJpZXOmZW50aXR5qWRlbGl2ZXJ5"
    "LaNobGOSzwAAAZryMrIAAKdjb250ZXh0gadkZXZpY2UtAaNvcHORg6JvcKNzZXSlZmllbGSmc3RhdHVzpXZhbHVlp2ludmFs"
    "aWSDpnZhbHVlc5KFpXZhbHVlpmZhaWxlZKdyZXBsaWNhp2RldmljZS2hbgGkdXNlcqdkcml2ZXIto2hsY5LPAAABmvIysgAA"
    "haV2YWx1ZalkZWxpdmVyZWSncmVwbGljYadkZXZpY2UtoW4CpHVzZXKrZGlzcGF0Y2hlci2jaGxjks8AAAGa8jKyAACmd2lu"
    "bmVyhaV2YWx1ZalkZWxpdmVyZWSncmVwbGljYadkZXZpY2UtoW4CpHVzZXKrZGlzcGF0Y2hlci2jaGxjks8AAAGa8jKyAACk"
    "bm90ZadjbGFtcGVkgaNvcHOYgaJvcKZkZWxldGWDom9wpmFwcGVuZKVmaWVsZKNncHOldmFsdWWCo2xhdMtAORmZmZmZmqNs"
    "b27LQEuZmZmZmZqDom9wpHRleHSlZmllbGSlbm90ZXOmdXBkYXRloIOib3CmcmVtb3ZlpWZpZWxkpHRhZ3OldmFsdWWheIOi"
    "b3CjYWRkpWZpZWxkp3NjYW5uZWSldmFsdWWkUENMLYOib3CjaW5jpWZpZWxkqWNvZF9jZW50c6JieQGDom9wo3NldKVmaWVs"
    "ZKZzdGF0dXOldmFsdWWpZGVsaXZlcmVkg6JvcKNzZXSlZmllbGSmc3RhdHVzpXZhbHVlsG91dF9mb3JfZGVsaXZlcnmCpXN0"
    "YXRlhKJ2doGpcmVwbGljYS0xAqZmaWVsZHOGpnN0YXR1c4Kka2luZKhyZWdpc3RlcqhzaWJsaW5nc5GFpXZhbHVlp3BlbmRp"
    "bmencmVwbGljYalyZXBsaWNhLTGhbgGjaGxjks8AAAGa8jKyAACkdXNlcqZ1c2VyLTGkbmFtZYKka2luZKhyZWdpc3Rlcqhz"
    "aWJsaW5nc5GFpXZhbHVlpXZhbHVlp3JlcGxpY2GpcmVwbGljYS0xoW4Co2hsY5LPAAABmvIysgAApHVzZXKmdXNlci0xpXRv"
    "dGFsgqRraW5kp2NvdW50ZXKnZW50cmllc4GpcmVwbGljYS0xkwEBAKR0YWdzgqRraW5ko3NldKhlbGVtZW50c4GjdGFnkZKp"
    "cmVwbGljYS0xAaV0cmFpbIKka2luZKNsb2enZW50cmllc5GVks8AAAGa8jKyAACpcmVwbGljYS0xAQCBo2xhdMsAAAAAAAAA"
    "AKVub3Rlc4Kka2luZKR0ZXh0pnVwZGF0ZcQApGxpdmWRhKdyZXBsaWNhqXJlcGxpY2EtMaFuAaNobGOSzwAAAZryMrIAAKR1"
    "c2VypnVzZXItMaR0b21ikKlmaWVsZF9zZXGGpnN0YXR1cwGkbmFtZQKldG90YWwBpHRhZ3MBpXRyYWlsAaVub3RlcwE="
)
_dict_1 = zstandard.ZstdCompressionDict(DICTIONARY_1, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
_dict_1.precompute_compress(level=3)
_compress_1 = zstandard.ZstdCompressor(
    dict_data=_dict_1, write_checksum=False, write_content_size=True, write_dict_id=False
)
_decompress_1 = zstandard.ZstdDecompressor(dict_data=_dict_1)


class FrameError(DecryptionError):
    """A sealed plaintext names a frame format this release does not know, or does not decompress.

    A ``DecryptionError``: every read path already treats a cell it cannot open as damaged (quarantined,
    reported by ``verify``, rebuilt by ``repair``) instead of failing the request."""


def frame(body: bytes, dictionary: KeyDictionary | None = None) -> bytes:
    """The plaintext to seal for ``body``: compressed when that makes it smaller.

    ``dictionary`` is the one of the key version the result will be sealed under (``TenantCipher.dictionary``),
    if it has one; never another version's.
    """
    if len(body) >= MIN_COMPRESS:
        if dictionary is not None:
            packed, fmt = dictionary.compress(body), ZSTD_TENANT
        else:
            packed, fmt = _compress_1.compress(body), ZSTD_DICT_1
        if len(packed) < len(body):
            return bytes((MAGIC, fmt)) + packed
    return bytes((MAGIC, RAW)) + body


def unframe(plaintext: bytes, dictionary: KeyDictionary | None = None) -> tuple[bool, bytes]:
    """``(framed, body)``: ``framed`` is False for a legacy row, whose whole plaintext is its body.

    ``dictionary`` is the one of the key version the plaintext was sealed under, if it has one.
    """
    if not plaintext or plaintext[0] != MAGIC:
        return False, plaintext
    if len(plaintext) < 2:
        raise FrameError("a frame header without its format")
    fmt, rest = plaintext[1], plaintext[2:]
    try:
        if fmt == RAW:
            return True, rest
        if fmt == ZSTD_DICT_1:
            return True, _decompress_1.decompress(rest, max_output_size=MAX_BODY)
        if fmt == ZSTD_TENANT:
            if dictionary is None:
                raise FrameError("a frame compressed against a dictionary its key version does not have")
            return True, dictionary.decompress(rest, max_output_size=MAX_BODY)
    except zstandard.ZstdError as exc:
        raise FrameError(f"a zstd frame that does not decompress: {exc}") from exc
    raise FrameError(f"unknown frame format {fmt:#04x} (written by a newer release?)")
