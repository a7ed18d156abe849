"""Compact forms of what is sealed at rest: the entity-state encoding and the plaintext frame.

Every sealed plaintext written by this release starts with a frame header; rows
written before it are plain msgpack and still read:

* ``0xC1 0x01`` + body: the body as is (too small for compression to pay);
* ``0xC1 0x02`` + a zstd frame of the body, compressed against ``DICTIONARY_1``;
* anything else: a legacy row, the whole plaintext is the body (msgpack).

``0xC1`` is the one byte msgpack never uses, so no legacy plaintext starts with
it. The second byte names the format for good: a later dictionary or codec takes
a new number and every number ever written keeps its meaning, so no row ever
becomes unreadable. The frame lives inside the sealed plaintext (compress, then
seal), so the associated data, key rotation and the integrity chain (which
hashes the *body*, never the frame) do not see it.

The entity body is a positional msgpack form of ``StoredEntity`` (layout below):
field names once, and each replica id and user once in a per-entity table that
siblings, marks, dots and counter entries point into.
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec
import zstandard

from syncproto.crdt import AWSet, Counter, FieldState, Log, LogEntry, Register, Sibling, TextState
from syncproto.merge import EntityState, Mark
from syncproto.vv import Dot
from syncserver.keys.envelope import DecryptionError

MAGIC = 0xC1
RAW = 0x01
ZSTD_DICT_1 = 0x02
MIN_COMPRESS = 64
"""Bodies shorter than this are framed as ``RAW``: a zstd frame header costs more than it could save."""
MAX_BODY = 64 * 1024 * 1024
"""The largest body a frame may expand to (a sealed plaintext is authenticated, so this only bounds a bug)."""

# A raw-content dictionary: msgpack of the keys and tags every stored payload repeats (ops, conflicts,
# dead letters, entity bodies). Frozen with format ZSTD_DICT_1: never edit it (a test pins its SHA-256);
# a better dictionary is a new format number.
DICTIONARY_1 = base64.b64decode(
    "h6JpZLowMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMKFuAapjb2xsZWN0aW9uqmRlbGl2ZXJpZXOmZW50aXR5qWRlbGl2ZXJ5"
    "LaNobGOSzwAAAZryMrIAAKdjb250ZXh0gadkZXZpY2UtAaNvcHORg6JvcKNzZXSlZmllbGSmc3RhdHVzpXZhbHVlp2ludmFs"
    "aWSDpnZhbHVlc5KFpXZhbHVlpmZhaWxlZKdyZXBsaWNhp2RldmljZS2hbgGkdXNlcqdkcml2ZXIto2hsY5LPAAABmvIysgAA"
    "haV2YWx1ZalkZWxpdmVyZWSncmVwbGljYadkZXZpY2UtoW4CpHVzZXKrZGlzcGF0Y2hlci2jaGxjks8AAAGa8jKyAACmd2lu"
    "bmVyhaV2YWx1ZalkZWxpdmVyZWSncmVwbGljYadkZXZpY2UtoW4CpHVzZXKrZGlzcGF0Y2hlci2jaGxjks8AAAGa8jKyAACk"
    "bm90ZadjbGFtcGVkgaNvcHOYgaJvcKZkZWxldGWDom9wpmFwcGVuZKVmaWVsZKNncHOldmFsdWWCo2xhdMtAORmZmZmZmqNs"
    "b27LQEuZmZmZmZqDom9wpHRleHSlZmllbGSlbm90ZXOmdXBkYXRloIOib3CmcmVtb3ZlpWZpZWxkpHRhZ3OldmFsdWWheIOi"
    "b3CjYWRkpWZpZWxkp3NjYW5uZWSldmFsdWWkUENMLYOib3CjaW5jpWZpZWxkqWNvZF9jZW50c6JieQGDom9wo3NldKVmaWVs"
    "ZKZzdGF0dXOldmFsdWWpZGVsaXZlcmVkg6JvcKNzZXSlZmllbGSmc3RhdHVzpXZhbHVlsG91dF9mb3JfZGVsaXZlcnk="
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


def frame(body: bytes) -> bytes:
    """The plaintext to seal for ``body``: compressed when that makes it smaller."""
    if len(body) >= MIN_COMPRESS:
        packed = _compress_1.compress(body)
        if len(packed) < len(body):
            return bytes((MAGIC, ZSTD_DICT_1)) + packed
    return bytes((MAGIC, RAW)) + body


def unframe(plaintext: bytes) -> tuple[bool, bytes]:
    """``(framed, body)``: ``framed`` is False for a legacy row, whose whole plaintext is its body."""
    if not plaintext or plaintext[0] != MAGIC:
        return False, plaintext
    if len(plaintext) < 2:
        raise FrameError("a frame header without its format")
    fmt, rest = plaintext[1], plaintext[2:]
    if fmt == RAW:
        return True, rest
    if fmt == ZSTD_DICT_1:
        try:
            return True, _decompress_1.decompress(rest, max_output_size=MAX_BODY)
        except zstandard.ZstdError as exc:
            raise FrameError(f"a zstd frame that does not decompress: {exc}") from exc
    raise FrameError(f"unknown frame format {fmt:#04x} (written by a newer release?)")


# --- the compact entity body ---------------------------------------------------------------
#
# msgpack of one array, positional throughout (no key is repeated; a name table per entity):
#
#   [table, vv, fields, live, tomb, other_seq]
#   table      [str, ...]            every replica id and user the entity mentions, each once
#   vv         [r, n, r, n, ...]     version vector, r an index into table
#   fields     [[kind, name, seq, body], ...]   seq the field's last change (nil: none recorded)
#       kind 0 register  body [[value, r, n, [wall, counter], u], ...]  its siblings, u the user's index
#       kind 1 counter   body [[r, n, increments, decrements], ...]
#       kind 2 set       body {element: [r, n, r, n, ...]}               its dots
#       kind 3 text      body bytes (the Yjs update)
#       kind 4 log       body [[[wall, counter], r, n, i, value], ...]
#   live, tomb [[r, n, [wall, counter], u], ...]   update and delete marks
#   other_seq  {name: seq}           field_seq entries of names without a field state
#
# It is built from tuples rather than Structs: decoding it into the merge types is on every pull and
# push, and a typed decode into mirror Structs followed by conversion cost twice as much (ADR 0029).

REGISTER, COUNTER, SET, TEXT, LOG = range(5)
_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder()


def encode_entity(state: EntityState, field_seq: dict[str, int]) -> bytes:
    """The compact msgpack body of an entity's state and its per-field change seqs."""
    ix: dict[str, int] = {}
    vv: list[int] = []
    for replica, n in state.vv.items():
        vv += (ix.setdefault(replica, len(ix)), n)
    fields = []
    for name, fs in state.fields.items():
        kind, body = _ENCODE[type(fs)](fs, ix)
        fields.append((kind, name, field_seq.get(name), body))
    live = [(ix.setdefault(m.replica, len(ix)), m.n, m.hlc, ix.setdefault(m.user, len(ix))) for m in state.live]
    tomb = [(ix.setdefault(m.replica, len(ix)), m.n, m.hlc, ix.setdefault(m.user, len(ix))) for m in state.tomb]
    other = {k: v for k, v in field_seq.items() if k not in state.fields}
    return _enc.encode((list(ix), vv, fields, live, tomb, other))


def _register(fs: Register, ix: dict[str, int]) -> tuple[int, Any]:
    return REGISTER, [
        (s.value, ix.setdefault(s.replica, len(ix)), s.n, s.hlc, ix.setdefault(s.user, len(ix))) for s in fs.siblings
    ]


def _counter(fs: Counter, ix: dict[str, int]) -> tuple[int, Any]:
    return COUNTER, [(ix.setdefault(r, len(ix)), n, inc, dec) for r, (n, inc, dec) in fs.entries.items()]


def _set(fs: AWSet, ix: dict[str, int]) -> tuple[int, Any]:
    elements = {}
    for key, dots in fs.elements.items():
        flat: list[int] = []
        for d in dots:
            flat += (ix.setdefault(d.replica, len(ix)), d.n)
        elements[key] = flat
    return SET, elements


def _text(fs: TextState, ix: dict[str, int]) -> tuple[int, Any]:
    return TEXT, fs.update


def _log(fs: Log, ix: dict[str, int]) -> tuple[int, Any]:
    return LOG, [(e.hlc, ix.setdefault(e.replica, len(ix)), e.n, e.i, e.value) for e in fs.entries]


_ENCODE: dict[type, Any] = {Register: _register, Counter: _counter, AWSet: _set, TextState: _text, Log: _log}


def decode_entity(body: bytes) -> tuple[EntityState, dict[str, int]]:
    """The entity state and per-field change seqs of a compact body."""
    try:
        t, vv, raw_fields, live, tomb, other = _dec.decode(body)
        fields: dict[str, FieldState] = {}
        field_seq: dict[str, int] = {}
        for kind, name, seq, b in raw_fields:
            fields[name] = _DECODE[kind](b, t)
            if seq is not None:
                field_seq[name] = seq
        field_seq.update(other)
        state = EntityState(
            {t[vv[i]]: vv[i + 1] for i in range(0, len(vv), 2)},
            fields,
            [Mark(t[r], n, (h[0], h[1]), t[u]) for r, n, h, u in live],
            [Mark(t[r], n, (h[0], h[1]), t[u]) for r, n, h, u in tomb],
        )
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise FrameError(f"not a compact entity body: {exc!r}") from exc
    return state, field_seq


def _d_register(b: Any, t: list[str]) -> FieldState:
    return Register([Sibling(v, t[r], n, (h[0], h[1]), t[u]) for v, r, n, h, u in b])


def _d_counter(b: Any, t: list[str]) -> FieldState:
    return Counter({t[r]: (n, inc, dec) for r, n, inc, dec in b})


def _d_set(b: Any, t: list[str]) -> FieldState:
    return AWSet({k: [Dot(t[fl[i]], fl[i + 1]) for i in range(0, len(fl), 2)] for k, fl in b.items()})


def _d_text(b: Any, t: list[str]) -> FieldState:
    return TextState(b)


def _d_log(b: Any, t: list[str]) -> FieldState:
    return Log([LogEntry((h[0], h[1]), t[r], n, i, v) for h, r, n, i, v in b])


_DECODE = (_d_register, _d_counter, _d_set, _d_text, _d_log)
