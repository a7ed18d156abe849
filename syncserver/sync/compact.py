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
from msgspec import Struct

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
# The Structs below encode to exactly that layout (``array_like``, the field kind as an integer tag).
# They are ``gc=False`` like the merge types: a state is decoded on every push and pull, and objects
# the garbage collector does not track add nothing to its work. The layout is frozen with the frame
# formats that carry it (a test pins the bytes of one state).

REGISTER, COUNTER, SET, TEXT, LOG = range(5)


class CSibling(Struct, gc=False, array_like=True):
    value: Any
    replica: int
    n: int
    hlc: tuple[int, int]
    user: int


class CMark(Struct, gc=False, array_like=True):
    replica: int
    n: int
    hlc: tuple[int, int]
    user: int


class CCount(Struct, gc=False, array_like=True):
    replica: int
    n: int
    increments: int
    decrements: int


class CLogEntry(Struct, gc=False, array_like=True):
    hlc: tuple[int, int]
    replica: int
    n: int
    i: int
    value: Any


class CRegister(Struct, gc=False, array_like=True, tag=REGISTER):
    name: str
    seq: int | None
    siblings: list[CSibling]


class CCounter(Struct, gc=False, array_like=True, tag=COUNTER):
    name: str
    seq: int | None
    entries: list[CCount]


class CSet(Struct, gc=False, array_like=True, tag=SET):
    name: str
    seq: int | None
    elements: dict[str, list[int]]


class CText(Struct, gc=False, array_like=True, tag=TEXT):
    name: str
    seq: int | None
    update: bytes


class CLog(Struct, gc=False, array_like=True, tag=LOG):
    name: str
    seq: int | None
    entries: list[CLogEntry]


CField = CRegister | CCounter | CSet | CText | CLog


class CompactEntity(Struct, gc=False, array_like=True):
    table: list[str]
    vv: list[int]
    fields: list[CField]
    live: list[CMark]
    tomb: list[CMark]
    other_seq: dict[str, int]


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(CompactEntity)


def encode_entity(state: EntityState, field_seq: dict[str, int]) -> bytes:
    """The compact msgpack body of an entity's state and its per-field change seqs."""
    ix: dict[str, int] = {}
    vv: list[int] = []
    for replica, n in state.vv.items():
        vv += (ix.setdefault(replica, len(ix)), n)
    fields = [_ENCODE[type(fs)](name, field_seq.get(name), fs, ix) for name, fs in state.fields.items()]
    live = [CMark(ix.setdefault(m.replica, len(ix)), m.n, m.hlc, ix.setdefault(m.user, len(ix))) for m in state.live]
    tomb = [CMark(ix.setdefault(m.replica, len(ix)), m.n, m.hlc, ix.setdefault(m.user, len(ix))) for m in state.tomb]
    other = {k: v for k, v in field_seq.items() if k not in state.fields}
    return _enc.encode(CompactEntity(list(ix), vv, fields, live, tomb, other))


def _register(name: str, seq: int | None, fs: Register, ix: dict[str, int]) -> CField:
    return CRegister(
        name,
        seq,
        [
            CSibling(s.value, ix.setdefault(s.replica, len(ix)), s.n, s.hlc, ix.setdefault(s.user, len(ix)))
            for s in fs.siblings
        ],
    )


def _counter(name: str, seq: int | None, fs: Counter, ix: dict[str, int]) -> CField:
    return CCounter(name, seq, [CCount(ix.setdefault(r, len(ix)), *entry) for r, entry in fs.entries.items()])


def _set(name: str, seq: int | None, fs: AWSet, ix: dict[str, int]) -> CField:
    elements = {}
    for key, dots in fs.elements.items():
        flat: list[int] = []
        for d in dots:
            flat += (ix.setdefault(d.replica, len(ix)), d.n)
        elements[key] = flat
    return CSet(name, seq, elements)


def _text(name: str, seq: int | None, fs: TextState, ix: dict[str, int]) -> CField:
    return CText(name, seq, fs.update)


def _log(name: str, seq: int | None, fs: Log, ix: dict[str, int]) -> CField:
    return CLog(name, seq, [CLogEntry(e.hlc, ix.setdefault(e.replica, len(ix)), e.n, e.i, e.value) for e in fs.entries])


_ENCODE: dict[type, Any] = {Register: _register, Counter: _counter, AWSet: _set, TextState: _text, Log: _log}


def decode_entity(body: bytes) -> tuple[EntityState, dict[str, int]]:
    """The entity state and per-field change seqs of a compact body."""
    try:
        c = _dec.decode(body)
        t = c.table
        fields: dict[str, FieldState] = {}
        field_seq: dict[str, int] = {}
        for f in c.fields:
            fields[f.name] = _DECODE[type(f)](f, t)
            if f.seq is not None:
                field_seq[f.name] = f.seq
        field_seq.update(c.other_seq)
        vv = c.vv
        state = EntityState(
            {t[vv[i]]: vv[i + 1] for i in range(0, len(vv), 2)},
            fields,
            [Mark(t[m.replica], m.n, m.hlc, t[m.user]) for m in c.live],
            [Mark(t[m.replica], m.n, m.hlc, t[m.user]) for m in c.tomb],
        )
    except (ValueError, IndexError) as exc:  # msgspec.DecodeError is a ValueError
        raise FrameError(f"not a compact entity body: {exc!r}") from exc
    return state, field_seq


def _d_register(f: CRegister, t: list[str]) -> FieldState:
    return Register([Sibling(s.value, t[s.replica], s.n, s.hlc, t[s.user]) for s in f.siblings])


def _d_counter(f: CCounter, t: list[str]) -> FieldState:
    return Counter({t[e.replica]: (e.n, e.increments, e.decrements) for e in f.entries})


def _d_set(f: CSet, t: list[str]) -> FieldState:
    return AWSet({k: [Dot(t[fl[i]], fl[i + 1]) for i in range(0, len(fl), 2)] for k, fl in f.elements.items()})


def _d_text(f: CText, t: list[str]) -> FieldState:
    return TextState(f.update)


def _d_log(f: CLog, t: list[str]) -> FieldState:
    return Log([LogEntry(e.hlc, t[e.replica], e.n, e.i, e.value) for e in f.entries])


_DECODE: dict[type, Any] = {CRegister: _d_register, CCounter: _d_counter, CSet: _d_set, CText: _d_text, CLog: _d_log}
