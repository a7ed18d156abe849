"""Entity views shared by every device that pulls the same entity at the same version.

When a thousand drivers come back at once they pull the same recent entities,
and each pull used to decrypt, decompress and decode every state and work out
every field's winning value again, once per device and entity. This cache
keeps, per entity version, what a pull needs from the opened state: the full
view, the per-field change seqs (for a device that lacks only some fields) and
the entity's channels (for drivers' pulls).

Integrity is unchanged. The key holds everything the ciphertext's
authentication covers (tenant, collection, entity, seq, chain link, key
version) and the ciphertext bytes themselves, so a hit stands for a row that
opened before with exactly these bytes: a row edited in the database since
then (even at the same seq) is a miss, is opened, and fails as before. The
check against the change log (``row.latest_seq``) is made on every read,
before the cache. Rows that fail are never kept.

A version is kept only once a second pull asks for it (an admission filter, as
TinyLFU's "doorkeeper"): the first miss only notes the key's hash. A device's
first sync scans a whole depot in seq order, each version once; keeping what it
reads cost a quarter of the pull's time and evicted the recent versions that
catch-up pulls share, all for entries the budget could not keep until a second
reader came (a sequential scan larger than the cache; databases keep such scans
out of their buffer pools for the same reason). Versions many devices pull are
opened twice instead of once, then shared.

Each caller gets its own shallow copy of a view (``attachments`` is set per
response); the field views inside are shared and never changed. Entries expire
after ``TTL_S``, so plaintext does not outlive a tenant's erasure by much more
than the unwrapped keys do (``SYNC_KEY_CACHE_TTL_S``, 300 s), and the entries
kept are bounded by their estimated memory (``BUDGET_BYTES``): measured with
tracemalloc, an entry costs about 1,500 bytes plus 5 per byte of its sealed
state (2.4 KB for a delivery of 150 sealed bytes, 7.3 KB for a 2 KiB value), so
a fleet writing large values cannot grow the server by more than the budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cachetools import TTLCache
from msgspec import Struct
from msgspec.structs import replace

from syncproto.messages import EntityView
from syncproto.schema import Collection
from syncproto.views import entity_view
from syncserver.auth.scopes import ChannelError, entity_channels
from syncserver.sync.payloads import StoredEntity
from syncstore.records import EntityRecord

BUDGET_BYTES = 8 * 1024 * 1024
"""Estimated memory of all entries: about 3,500 deliveries."""
TTL_S = 60.0
ENTRY_BYTES = 1500
BYTES_PER_SEALED_BYTE = 5
SEEN_PER_ENTRY = 2
"""The admission filter remembers this many keys per entry the budget holds at ``ENTRY_BYTES``, then starts over."""

_Key = tuple[str, str, str, int, bytes | None, int, bytes]


class OpenedEntity(Struct, frozen=True, gc=False):
    """What pulls need of one entity version, computed once (a Struct: a ninth of a dataclass's cost to make)."""

    view: EntityView
    """The full view (every field)."""
    field_seq: dict[str, int]
    channels: frozenset[str] | None
    """The channels its state puts it in; None if it has none a driver could hold (``ChannelError``), or if
    they were not worked out (``opened(..., channels=False)``): either way no driver's scope allows it."""
    size: int
    """Estimated bytes of memory it holds (with its key)."""

    def view_for(self, after: int) -> EntityView:
        """A copy of the view: all fields when ``after`` is 0, else those changed after ``after``."""
        if after == 0:
            return replace(self.view)
        full = self.view.fields  # empty for a deleted entity, as ``entity_view`` leaves it
        changed = sorted(f for f, s in self.field_seq.items() if s > after and f in full)
        return replace(self.view, fields={name: full[name] for name in changed})


def entry_size(row: EntityRecord) -> int:
    """The estimated memory of the row's entry (see the module docs), known before it is opened."""
    return ENTRY_BYTES + BYTES_PER_SEALED_BYTE * len(row.state)


def opened(stored: StoredEntity, collection: Collection, row: EntityRecord, *, channels: bool = True) -> OpenedEntity:
    """The entry for ``row``'s opened state; ``channels=False`` skips its channels (for a tenant-wide reader's
    entry that is not kept: a driver's scope then allows it nowhere, so it fails closed if it ever meets one)."""
    view = entity_view(stored.state, collection, row.entity_id, row.seq, None)
    found: frozenset[str] | None = None
    if channels:
        try:
            found = entity_channels(collection, stored.state)
        except ChannelError:
            found = None
    return OpenedEntity(view, dict(stored.field_seq), found, entry_size(row))


class ViewCache:
    """Opened entity versions by their authenticated identity and ciphertext. See the module docs."""

    def __init__(
        self, budget_bytes: int = BUDGET_BYTES, ttl_s: float = TTL_S, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self.budget_bytes = budget_bytes
        self._entries: TTLCache[_Key, OpenedEntity] = TTLCache(
            maxsize=budget_bytes, ttl=ttl_s, timer=timer, getsizeof=lambda entry: entry.size
        )
        self._seen: set[int] = set()
        """Hashes of keys missed once and not kept (the admission filter, see the module docs)."""
        self._seen_limit = max(64, SEEN_PER_ENTRY * budget_bytes // ENTRY_BYTES)

    @staticmethod
    def key(tenant: str, row: EntityRecord) -> _Key:
        return (tenant, row.collection, row.entity_id, row.seq, row.chain, row.key_version, row.state)

    def get(self, tenant: str, row: EntityRecord) -> OpenedEntity | None:
        key = self.key(tenant, row)
        entries = self._entries
        # ``in`` first: a miss (every version of a device's first sync) costs a third of what ``get`` costs on
        # one, which raises and catches a KeyError inside cachetools. Then ``get``, not ``[]``: the entry may
        # expire between the two (each reads the clock), and ``get`` answers None where ``[]`` would raise.
        return entries.get(key) if key in entries else None

    def admit(self, tenant: str, row: EntityRecord) -> _Key | None:
        """Note a miss of ``row``'s version; the key to ``keep`` its entry under if this is its second miss
        (see the module docs), else None (not kept: the caller need not work out what only kept entries hold)."""
        if entry_size(row) > self.budget_bytes // 16:  # one huge entity does not empty the cache
            return None
        key = self.key(tenant, row)
        marker = hash(key)  # a collision only admits an entry early
        if marker in self._seen:
            self._seen.discard(marker)
            return key
        if len(self._seen) >= self._seen_limit:
            self._seen.clear()
        self._seen.add(marker)
        return None

    def keep(self, key: _Key, entry: OpenedEntity) -> None:
        """Keep ``entry`` (its channels worked out) under a key ``admit`` gave."""
        self._entries[key] = entry

    @property
    def held_bytes(self) -> int:
        """The estimated memory of the entries kept."""
        return int(self._entries.currsize)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._seen.clear()
