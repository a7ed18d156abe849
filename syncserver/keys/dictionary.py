"""A key version's compression dictionary: zstd trained on the tenant's own payloads (ADR 0034).

The built-in dictionary (``syncserver.sync.compact``) knows the keys and tags every payload repeats,
not the values. A delivery tenant's values repeat too: statuses, depots, driver ids, the city and
country of every address, timestamps' common prefixes, replica ids. A dictionary trained on a
sample of the tenant's own sealed plaintexts removes them as well (one run: an entity state 381 ->
130 bytes, a create's ops 236 -> 44).

A dictionary holds pieces of tenant data, so it is key material: it belongs to one data-key
version, is stored sealed under that very key (``tenant_keys.dictionary``), is destroyed with it,
and a frame compressed against it is only ever sealed under the same version
(``ZSTD_TENANT`` in ``compact``). So a row never needs a dictionary from another version, and a
version can be destroyed after re-encryption without orphaning anything.

The compressor uses small match tables (``hash_log`` 10: 8 KiB instead of the 768 KiB of zstd's
level-3 defaults): payloads are a few hundred bytes. Measured on the footprint scenario's payloads,
the small tables compress exactly as well for them.

A zstd compressor and decompressor bound to a dictionary still weigh about 125 KiB together (their
contexts), so they are not kept per cached cipher (up to 10,000 tenants) but in one process-wide LRU
of ``CODECS`` dictionaries: at most about 32 MiB. One that fell out is rebuilt in about 20 µs.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import zstandard

DICTIONARY_BYTES = 4096
"""Size of a trained dictionary. On the footprint scenario's payloads 4 KiB compressed as well as 16 or 64 KiB."""
MIN_SAMPLES = 64
"""Fewer samples than this train nothing useful (zstd refuses or overfits)."""

_PARAMS = zstandard.ZstdCompressionParameters(
    window_log=17,
    hash_log=10,
    chain_log=10,
    search_log=1,
    min_match=4,
    strategy=zstandard.STRATEGY_DFAST,
    write_checksum=False,
    write_content_size=True,
    write_dict_id=False,
)


class TrainingError(Exception):
    """The samples do not make a dictionary (too few, too small or too alike)."""


def train(samples: Sequence[bytes], size: int = DICTIONARY_BYTES) -> bytes:
    """A zstd dictionary of at most ``size`` bytes trained on ``samples`` (plaintext bodies)."""
    if len(samples) < MIN_SAMPLES:
        raise TrainingError(f"{len(samples)} samples; at least {MIN_SAMPLES} are needed")
    pieces: list[bytes | bytearray | memoryview] = list(samples)
    try:
        # f=18: a 1 MiB frequency table instead of the default 4 MiB. The server keeps about 4 MiB more
        # after a training instead of 8 (glibc does not hand freed memory back), for entity states about
        # 13 % larger on the footprint scenario (144 bytes against 127).
        trained = zstandard.train_dictionary(size, pieces, level=3, f=18)
    except zstandard.ZstdError as exc:
        raise TrainingError(str(exc)) from exc
    return trained.as_bytes()


CODECS = 256
"""Dictionaries whose zstd contexts a process keeps built (see the module docs)."""


class _Codec:
    __slots__ = ("compressor", "decompressor")

    def __init__(self, data: bytes) -> None:
        built = zstandard.ZstdCompressionDict(data)
        self.compressor = zstandard.ZstdCompressor(dict_data=built, compression_params=_PARAMS)
        self.decompressor = zstandard.ZstdDecompressor(dict_data=built)


@functools.lru_cache(maxsize=CODECS)
def _codec_of(data: bytes) -> _Codec:
    """The built contexts of a dictionary, by its bytes (whose hash Python computes once per object).

    ``functools.lru_cache`` is implemented in C: a hit costs about a tenth of ``cachetools.LRUCache``'s,
    and every payload sealed or opened under a trained dictionary makes one."""
    return _Codec(data)


class KeyDictionary:
    """Compresses and decompresses bodies against one dictionary (its zstd contexts: see the module docs)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:  # never show the contents: they are tenant data
        return f"KeyDictionary({len(self.data)} bytes)"

    def _codec(self) -> _Codec:
        return _codec_of(self.data)

    def compress(self, body: bytes) -> bytes:
        return self._codec().compressor.compress(body)

    def decompress(self, packed: bytes, max_output_size: int) -> bytes:
        """Raises ``zstandard.ZstdError`` if ``packed`` is not a frame made against this dictionary."""
        return self._codec().decompressor.decompress(packed, max_output_size=max_output_size)
