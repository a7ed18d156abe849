"""The ``ChannelStore`` interface: reads filtered by channel membership (partial replication).

The server decides which channels an entity belongs to (from its collection's
channel templates and its field values) and writes one plaintext row per
``(entity, channel)`` in the same commit as the entity (``PushBatch.memberships``).
These reads use those rows, so a driver's pull costs what the driver may see,
not what the tenant holds.

``SqlStore`` and ``MemoryStore`` implement it through their parts ``SqlChannels``
(``sql_channels.py``) and ``MemoryChannels`` (``memory_channels.py``); ``FaultyStore`` forwards it.

Usage::

    page = await store.pull_in_channels("acme", ["driver:17"], after_seq=40, limit=100)
    gone = await store.evictions("acme", ["driver:17"], after_seq=40, limit=100)
    both = await store.scoped_page("acme", ["driver:17"], after_seq=40, limit=100)  # and the tenant row
    visible = bool(set(await store.entity_channels("acme", "deliveries", "dlv-1")) & {"driver:17"})

Pitfalls:

* A row with ``member`` false is kept when an entity leaves a channel; it is
  what makes an eviction. ``evictions`` leaves out entities still visible
  through another of the given channels.
* ``pull_in_channels`` returns each entity once even when it is in several of
  the channels, with the smallest ``joined_seq``: an entity that joined the
  device's scope after its cursor must be sent whole, not as a delta.
* ``scoped_page`` is what a scoped pull reads: the tenant row, then
  ``pull_in_channels``, then ``evictions``, together and in one snapshot (on
  SQLite one hop to a reader thread instead of three, about a third of a
  small pull's time; on PostgreSQL one ``REPEATABLE READ READ ONLY``
  transaction). Read apart, a push committing between the entities and the
  evictions put a later eviction on the page without an earlier change, and
  the cursor, moved to the page's last item, skipped the change; a purge
  committing between the tenant row and the page took a tombstone out of the
  page without the reset that stands for it.
* Channel lists are small (a token's ``ch`` claim); they go into ``IN (...)``.
  ``latest_in_channels`` takes the channels of every live driver of a tenant,
  which can be thousands: it reads them in chunks.
* ``pull_in_channels`` must read channel rows and entity rows in one snapshot
  (SQL: one statement): read apart, a push committing in between leaves them at
  different seqs, and an entity dropped for that while the cursor moves past it
  is a change the device never sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from msgspec import Struct

from syncstore.records import ConflictFilter, ConflictRecord, EntityRecord, TenantRecord


class ScopedEntity(Struct, frozen=True, gc=False):
    """An entity row visible through some channel, and when it became visible through it."""

    record: EntityRecord
    joined_seq: int
    """The smallest ``joined_seq`` among the given channels the entity is a member of."""


class EvictionRecord(Struct, frozen=True, gc=False):
    """An entity that left the given channels at ``seq`` and is in none of them now (by its channel rows)."""

    collection: str
    entity_id: str
    seq: int
    record: EntityRecord | None = None
    """``scoped_page`` only: the entity's row, read with the eviction (one snapshot); ``None`` when it has no row.
    Channel rows are only an index: the reader confirms from the row's state that the entity really left."""


class ScopedPage(Struct, frozen=True, gc=False):
    """What ``ChannelStore.scoped_page`` read: the tenant row, then a page of entities and one of evictions."""

    tenant: TenantRecord | None
    """``None``: no such tenant (then both lists are empty)."""
    entities: list[ScopedEntity]
    evictions: list[EvictionRecord]


@runtime_checkable
class ChannelStore(Protocol):
    """Channel-scoped reads. See the module docs."""

    async def pull_in_channels(
        self,
        tenant_id: str,
        channels: Sequence[str],
        after_seq: int,
        limit: int,
        collections: Sequence[str] | None = None,
    ) -> list[ScopedEntity]:
        """Entities that are members of any of ``channels`` with ``seq > after_seq``, in seq order, at most ``limit``.

        ``collections=None`` means all; an empty list (of channels or collections) matches nothing.
        """
        ...

    async def evictions(
        self,
        tenant_id: str,
        channels: Sequence[str],
        after_seq: int,
        limit: int,
        collections: Sequence[str] | None = None,
    ) -> list[EvictionRecord]:
        """Entities that left one of ``channels`` after ``after_seq`` and are a member of none of them now.

        In order of the seq at which they left (the latest, if they left several), at most ``limit``.
        """
        ...

    async def scoped_page(
        self,
        tenant_id: str,
        channels: Sequence[str],
        after_seq: int,
        limit: int,
        collections: Sequence[str] | None = None,
        *,
        evictions: bool = True,
    ) -> ScopedPage:
        """``Store.get_tenant``, then ``pull_in_channels``, then (with ``evictions``) ``evictions``, read together.

        In one snapshot: the tenant row (its ``last_seq`` and ``purged_seq``), the entities and the evictions
        all show the same commits, so a push or a purge committing meanwhile shows in all of them or in none
        (a pull's cursor moves to the last item of its page: an eviction of a later commit on the page, with
        an entity change of that commit missing from it, would skip the change for good). Each eviction
        carries its entity's row (``EvictionRecord.record``), read in the same snapshot. An unknown tenant
        gives ``None`` and empty lists.
        """
        ...

    async def latest_in_channels(self, tenant_id: str, channels: Sequence[str], after_seq: int) -> dict[str, int]:
        """For each of ``channels`` with a row written after ``after_seq``: the highest such row's seq.

        A row is written when an entity in the channel changes and when a change takes it out. So a pull
        in some channels from a cursor ``p >= after_seq`` finds something (an entity or an eviction) only if
        one of them maps above ``p``: the live feed wakes only the drivers a new page concerns.
        """
        ...

    async def entity_channels(self, tenant_id: str, collection: str, entity_id: str) -> dict[str, int]:
        """The channels the entity is a member of now, each with its ``joined_seq``; empty if none or unknown."""
        ...

    async def conflicts_in_channels(
        self,
        tenant_id: str,
        channels: Sequence[str],
        after: tuple[int, int] | None,
        limit: int,
        filters: ConflictFilter | None = None,
    ) -> list[ConflictRecord]:
        """``Store.conflicts``, limited to entities that are a member of any of ``channels`` now."""
        ...

    async def set_entity_channels(
        self, tenant_id: str, collection: str, entity_id: str, expected_seq: int, channels: Sequence[str]
    ) -> bool:
        """Under the tenant lock, make ``channels`` the entity's member channels if its seq is still ``expected_seq``.

        New rows get ``seq = joined_seq = expected_seq``; member rows of other
        channels are marked as left at ``expected_seq``; rows of channels it
        stays in are kept as they are. For rebuilding the rows of existing
        entities (``syncserver channels reindex``). Returns ``False`` and writes
        nothing when the entity changed or vanished meanwhile (the push that
        changed it wrote its rows). Raises ``TenantNotFound``.
        """
        ...
