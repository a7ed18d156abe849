"""Hot Yjs documents, kept decoded between merges of the same text.

Merging an update into a text state means decoding the whole document first;
for a long document that costs more than the merge itself. A server that
merges edit after edit into one text stores, each time, the state it just
made (a base and the updates merged since, ``TextState``), and would decode
it again for the next change. This cache hands back the document of those
exact bytes instead.

Pitfalls, and how the cache avoids them:

* **A cached document must equal its key.** Entries are keyed by the exact
  base and tail updates of the state the document produced (``Key``), so a state that came from anywhere
  else (another process, a restore, a rejected merge) is simply a miss.
* **Merging mutates the document.** :meth:`DocCache.take` removes the entry;
  the caller puts the document back under its new encoding only after the
  merge succeeded, so a refused update never leaves a half-merged document.
* **pycrdt documents stay on the thread that made them**, so each thread has
  its own cache (:func:`thread_cache`).
* **Memory is bounded** by the encoded bytes of the entries (the decoded
  document is a small multiple of that) and by their number; the least
  recently used go first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from pycrdt import Doc

MAX_BYTES = 8 * 1024 * 1024
MAX_ENTRIES = 256
# Small states decode faster than the cache's bookkeeping pays back.
MIN_BYTES = 4096


Key = tuple[bytes, ...]
"""A text state's base and tail (``text.cache_key``): the document is the base with the tail applied."""


def _size(key: Key) -> int:
    return sum(map(len, key))


class DocCache:
    """Documents by the exact state they encode to, least recently used evicted first.

    >>> cache = DocCache(max_bytes=1 << 20)
    >>> doc = cache.take(b"state bytes")  # None on a miss: decode, merge, then ``put``
    """

    def __init__(self, max_bytes: int = MAX_BYTES, max_entries: int = MAX_ENTRIES) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._docs: OrderedDict[Key, Doc[Any]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._docs)

    @property
    def size_bytes(self) -> int:
        """Encoded bytes of the cached documents."""
        return self._bytes

    def take(self, state: Key) -> Doc[Any] | None:
        """Remove and return the document that ``state`` encodes, if cached."""
        doc = self._docs.pop(state, None)
        if doc is not None:
            self._bytes -= _size(state)
        return doc

    def peek(self, state: Key) -> Doc[Any] | None:
        """The cached document of ``state`` for reading only; it stays cached."""
        doc = self._docs.get(state)
        if doc is not None:
            self._docs.move_to_end(state)
        return doc

    def put(self, state: Key, doc: Doc[Any]) -> None:
        """Keep ``doc``, the document ``state`` encodes; evict the oldest beyond the bounds."""
        size = _size(state)
        if size < MIN_BYTES or size > self.max_bytes:
            return
        if self._docs.pop(state, None) is not None:
            self._bytes -= size
        self._docs[state] = doc
        self._bytes += size
        while self._bytes > self.max_bytes or len(self._docs) > self.max_entries:
            old, _ = self._docs.popitem(last=False)
            self._bytes -= _size(old)

    def clear(self) -> None:
        self._docs.clear()
        self._bytes = 0


_local = threading.local()


def thread_cache() -> DocCache:
    """This thread's cache (pycrdt documents cannot move between threads)."""
    cache: DocCache | None = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = DocCache()
    return cache
