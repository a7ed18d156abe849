"""``SqlChannels``: the ``ChannelStore`` part of ``SqlStore`` (see ``channels.py``).

A scoped pull scans ``ix_entity_channels_tenant_channel_seq`` for the token's
channels after the cursor, then fetches the entity rows by primary key. The two
reads are separate statements, so an entity row is used only if its seq still
equals the channel row's: a row that moved on meanwhile is left for the next
page, where its new channel rows (or its eviction) describe it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Exists,
    FromClause,
    RowMapping,
    Select,
    bindparam,
    false,
    func,
    literal,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from syncstore import rows, sql_log
from syncstore.channels import EvictionRecord, ScopedEntity, ScopedPage
from syncstore.records import ConflictFilter, ConflictRecord, EntityRecord, MembershipRecord
from syncstore.sql_conflicts import conflict_page, visible_in_window, window_end
from syncstore.sql_database import SqlDatabase
from syncstore.sql_session import chunks, entity_rows
from syncstore.tables import conflicts, entities, entity_channels, latest_seq_column

ec = entity_channels


class SqlChannels:
    """The ``ChannelStore`` part of ``SqlStore``, over the store's shared ``SqlDatabase``."""

    def __init__(self, db: SqlDatabase) -> None:
        self._db = db

    async def pull_in_channels(
        self,
        tenant_id: str,
        channels: Sequence[str],
        after_seq: int,
        limit: int,
        collections: Sequence[str] | None = None,
    ) -> list[ScopedEntity]:
        """See ``ChannelStore.pull_in_channels``."""
        wanted = _wanted(channels, limit, collections)
        if wanted is None:
            return []
        query, params = _entities_read(tenant_id, wanted, after_seq, limit, collections)
        return _scoped_entities(await self._db.rows(query, params), limit)

    async def evictions(
        self,
        tenant_id: str,
        channels: Sequence[str],
        after_seq: int,
        limit: int,
        collections: Sequence[str] | None = None,
    ) -> list[EvictionRecord]:
        """See ``ChannelStore.evictions``: with their entities' rows, as ``scoped_page`` reads them."""
        wanted = _wanted(channels, limit, collections)
        if wanted is None:
            return []
        read = _evictions_read(tenant_id, wanted, after_seq, limit, collections)
        gone, evicted = await self._db.read(functools.partial(_with_entity_rows, tenant_id, [read]), snapshot=True)
        return _eviction_records(gone, evicted)

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
        """See ``ChannelStore.scoped_page``: the three reads in one ``SqlDatabase.read`` and one snapshot.

        On PostgreSQL that is a ``REPEATABLE READ READ ONLY`` transaction (``SqlDatabase.read(snapshot=True)``):
        in autocommit each statement had its own snapshot, and a push committing between the entities and the
        evictions put its eviction on the page without its entity changes, which the cursor then skipped.
        Evictions are rare: when there are some, their entities' rows are read in the same snapshot (a fourth
        statement), for the reader to confirm them (``EvictionRecord.record``).
        """
        wanted = _wanted(channels, limit, collections)
        reads: list[_Read] = []
        if wanted is not None:
            reads.append(_entities_read(tenant_id, wanted, after_seq, limit, collections))
            if evictions:
                reads.append(_evictions_read(tenant_id, wanted, after_seq, limit, collections))
        tenant, *found, evicted = await self._db.read(
            functools.partial(_read_page, tenant_id, [(sql_log.TENANT_ROW, {"tenant_id": tenant_id}), *reads]),
            snapshot=True,
        )
        if not tenant:
            return ScopedPage(None, [], [])
        return ScopedPage(
            rows.tenant_from_row(tenant[0]),
            _scoped_entities(found[0], limit) if found else [],
            _eviction_records(found[1], evicted) if len(found) > 1 else [],
        )

    async def latest_in_channels(self, tenant_id: str, channels: Sequence[str], after_seq: int) -> dict[str, int]:
        """See ``ChannelStore.latest_in_channels``: one read, a statement per chunk of channels.

        Each channel is a range of ``ix_entity_channels_tenant_channel_seq`` after ``after_seq``: the work
        grows with the rows written since, not with the tenant's size.
        """
        wanted = sorted(set(channels))
        if not wanted:
            return {}
        reads: list[_Read] = [
            (_LATEST_IN_CHANNELS, {"tenant_id": tenant_id, "channels": list(chunk), "after": after_seq})
            for chunk in chunks(wanted)
        ]
        found = await self._db.read(functools.partial(_read_all, reads))
        return {row["channel"]: row["seq"] for rows_ in found for row in rows_}

    async def entity_channels(self, tenant_id: str, collection: str, entity_id: str) -> dict[str, int]:
        """See ``ChannelStore.entity_channels``."""
        query = select(ec.c.channel, ec.c.joined_seq).where(
            sql_log.of_tenant(ec, tenant_id),
            ec.c.collection == collection,
            ec.c.entity_id == entity_id,
            ec.c.member == true(),
        )
        return {row["channel"]: row["joined_seq"] for row in await self._db.rows(query)}

    async def conflicts_in_channels(
        self,
        tenant_id: str,
        channels: Sequence[str],
        after: tuple[int, int] | None,
        limit: int,
        filters: ConflictFilter | None = None,
    ) -> list[ConflictRecord]:
        """See ``ChannelStore.conflicts_in_channels``: keyset pagination, like ``Store.conflicts``.

        On PostgreSQL one query: the log's rows each tested against the reader's channels, which its planner (it
        keeps statistics) drives from the reader's channel rows. On SQLite the same query walks the log in order
        until it has a page: a driver who sees few of the tenant's conflicts read the whole log. So there, unless
        the filters name one entity (then its few conflicts are each checked), the page is looked for in the next
        ``CONFLICT_WINDOW`` rows of the log first. If it is not all there and the log goes on, the window says how
        much of the log the reader sees: a tenth or more (a depot's supervisor), and the walk goes on as before, a
        page costing about ten times its size in rows; less (a driver), and the page is found from the reader's
        channels' entities instead, at the cost of their conflicts, not of the log.
        """
        wanted = sorted(set(channels))
        if limit <= 0 or not wanted:
            return []
        tenant_no = sql_log.tenant_no(tenant_id)

        def visible(row: FromClause) -> Exists:
            return _member_in(ec, row, wanted, tenant_no)

        one_entity = filters is not None and filters.collection is not None and filters.entity_id is not None
        if one_entity or not self._db.sqlite:
            found = await self._db.rows(conflict_page(tenant_id, after, limit, filters, visible))
            return [rows.conflict_from_row(row) for row in found]

        def visible_count(conn: Connection, until: tuple[int, int]) -> int:
            counted = visible_in_window(tenant_id, after, until, visible, CONFLICT_WINDOW // 10)
            return int(conn.execute(counted).scalar_one())

        def page(conn: Connection) -> Sequence[RowMapping]:
            end = conn.execute(window_end(tenant_id, after, CONFLICT_WINDOW)).one_or_none()
            if end is None:  # the rest of the log is shorter than the window
                return conn.execute(conflict_page(tenant_id, after, limit, filters, visible)).mappings().all()
            until = (end.seq, end.idx)
            near = conn.execute(conflict_page(tenant_id, after, limit, filters, visible, until=until)).mappings().all()
            if len(near) == limit:
                return near
            # The window holds all of the page up to ``until``; the rest comes after it, by the walk or from the
            # channels' side. Without filters the window's visible rows are what it found; with them, count them.
            seen = len(near) if filters is None else visible_count(conn, until)
            more = limit - len(near)
            if seen * 10 >= CONFLICT_WINDOW:
                rest = conflict_page(tenant_id, until, more, filters, visible)
            else:
                among = _conflicts_of_members(tenant_id, tenant_no, wanted)
                rest = conflict_page(tenant_id, until, more, filters, among=among)
            return [*near, *conn.execute(rest).mappings().all()]

        return [rows.conflict_from_row(row) for row in await self._db.read(page)]

    async def set_entity_channels(
        self, tenant_id: str, collection: str, entity_id: str, expected_seq: int, channels: Sequence[str]
    ) -> bool:
        """See ``ChannelStore.set_entity_channels``."""
        async with self._db.locked(tenant_id) as locked:
            conn = locked.conn
            current = (
                await conn.execute(
                    select(entities.c.seq, entities.c.tenant_no).where(
                        sql_log.of_tenant(entities, tenant_id),
                        entities.c.collection == collection,
                        entities.c.entity_id == entity_id,
                    )
                )
            ).one_or_none()
            if current is None or current.seq != expected_seq:
                return False
            tenant_no = current.tenant_no
            key = (ec.c.tenant_no == tenant_no, ec.c.collection == collection, ec.c.entity_id == entity_id)
            members = {
                c for (c,) in (await conn.execute(select(ec.c.channel).where(*key, ec.c.member == true()))).all()
            }
            wanted = set(channels)
            leaving = members - wanted
            if leaving:
                await conn.execute(
                    update(ec).where(*key, ec.c.channel.in_(sorted(leaving))).values(member=False, seq=expected_seq)
                )
            joining = [
                rows.membership_to_row(
                    tenant_no, MembershipRecord(collection, entity_id, c, expected_seq, expected_seq, True)
                )
                for c in sorted(wanted - members)
            ]
            if joining:
                # A row of a channel the entity once left is revived in place.
                await conn.execute(
                    update(ec)
                    .where(*key, ec.c.channel.in_([r["channel"] for r in joining]))
                    .values(member=True, seq=expected_seq, joined_seq=expected_seq)
                )
                present = {
                    c
                    for (c,) in (
                        await conn.execute(select(ec.c.channel).where(*key, ec.c.channel.in_(sorted(wanted))))
                    ).all()
                }
                missing = [r for r in joining if r["channel"] not in present]
                if missing:
                    await conn.execute(ec.insert(), missing)
            await conn.commit()
            return True


_Read = tuple[Select[Any], dict[str, Any]]

CONFLICT_WINDOW = 2000
"""How many rows of the conflict log a restricted reader's page looks at before it looks from its channels' side
(``SqlChannels.conflicts_in_channels``): about half a millisecond of SQLite."""
"""A statement and its bound values."""

_LATEST_IN_CHANNELS = (
    select(ec.c.channel, func.max(ec.c.seq).label("seq"))
    .where(
        sql_log.of_tenant(ec, bindparam("tenant_id")),
        ec.c.channel.in_(bindparam("channels", expanding=True)),
        ec.c.seq > bindparam("after"),
    )
    .group_by(ec.c.channel)
)


def _wanted(channels: Sequence[str], limit: int, collections: Sequence[str] | None) -> list[str] | None:
    """The channels to read, sorted; ``None`` when nothing can match (no channels, collections or room)."""
    wanted = sorted(set(channels))
    if limit <= 0 or not wanted or (collections is not None and not collections):
        return None
    return wanted


def _entities_read(
    tenant_id: str, wanted: list[str], after_seq: int, limit: int, collections: Sequence[str] | None
) -> _Read:
    # An entity has at most one row per channel, all with its current seq: this
    # many rows hold at least ``limit`` distinct entities when there are that many.
    params = _params(tenant_id, wanted, collections) | {"after": after_seq, "limit": limit * len(wanted)}
    return _channel_entities_query(collections is not None), params


def _scoped_entities(found: Sequence[RowMapping], limit: int) -> list[ScopedEntity]:
    """Each entity of ``_entities_read``'s rows once, with its smallest ``joined_seq``, at most ``limit``."""
    keyed: dict[tuple[str, str], tuple[EntityRecord, int]] = {}
    for row in found:
        key = (row["collection"], row["entity_id"])
        joined = row["joined_seq"]
        record, earlier = keyed.get(key, (None, joined))
        keyed[key] = (record if record is not None else rows.entity_from_row(row), min(joined, earlier))
        if len(keyed) > limit:
            del keyed[key]
            break
    # A channel row carries its entity's current seq (both are written by the same commit).
    return [ScopedEntity(record, joined) for record, joined in keyed.values()]


def _evictions_read(
    tenant_id: str, wanted: list[str], after_seq: int, limit: int, collections: Sequence[str] | None
) -> _Read:
    params = _params(tenant_id, wanted, collections) | {"after": after_seq, "limit": limit}
    return _evictions_query(collections is not None), params


def _eviction_records(
    found: Sequence[RowMapping], records: dict[tuple[str, str], EntityRecord] | None = None
) -> list[EvictionRecord]:
    """The evictions of ``_evictions_read``'s rows, each with its entity's row from ``records`` if given."""
    known = records or {}
    return [
        EvictionRecord(r["collection"], r["entity_id"], r["seq"], known.get((r["collection"], r["entity_id"])))
        for r in found
    ]


def _read_all(reads: list[_Read], conn: Connection) -> list[Sequence[RowMapping]]:
    """Every read's rows, in order, on one connection (``SqlDatabase.read``)."""
    return [conn.execute(query, params).mappings().all() for query, params in reads]


def _with_entity_rows(tenant_id: str, reads: list[_Read], conn: Connection) -> list[Any]:
    """``reads`` (``_read_all``), the last of them the evictions; then, only when there are evictions, their
    entities' rows (a dict by key, appended), on the same connection and snapshot."""
    found: list[Any] = _read_all(reads, conn)
    keys = [(r["collection"], r["entity_id"]) for r in found[-1]]
    found.append(entity_rows(conn, tenant_id, keys) if keys else {})
    return found


def _read_page(tenant_id: str, reads: list[_Read], conn: Connection) -> list[Any]:
    """``scoped_page``'s reads: the tenant row, the entities, the evictions (when asked for), and the rows of the
    evicted entities (``_with_entity_rows``; an empty dict without evictions)."""
    if len(reads) < 3:
        return [*_read_all(reads, conn), {}]
    return _with_entity_rows(tenant_id, reads, conn)


def _params(tenant_id: str, channels: list[str], collections: Sequence[str] | None) -> dict[str, Any]:
    """The bound values of ``_in_bound_channels``."""
    params: dict[str, Any] = {"tenant_id": tenant_id, "channels": channels, "visible_channels": channels}
    if collections is not None:
        params["collections"] = sorted(set(collections))
    return params


def _in_bound_channels(by_collection: bool) -> list[ColumnElement[bool]]:
    """The tenant's rows in the token's channels (and collections), as bound parameters (``_params``)."""
    where: list[ColumnElement[bool]] = [
        sql_log.of_tenant(ec, bindparam("tenant_id")),
        ec.c.channel.in_(bindparam("channels", expanding=True)),
    ]
    if by_collection:
        where.append(ec.c.collection.in_(bindparam("collections", expanding=True)))
    return where


def _member_in(member: FromClause, row: FromClause, channels: Any, tenant_no: Any = None) -> Exists:
    """EXISTS a member row (``member``: ``entity_channels`` or an alias) of ``row``'s entity in ``channels``.

    ``tenant_no``: the tenant's number, when ``row`` names its tenant by id (a conflict)."""
    return (
        select(literal(1))
        .where(
            member.c.tenant_no == (row.c.tenant_no if tenant_no is None else tenant_no),
            member.c.collection == row.c.collection,
            member.c.entity_id == row.c.entity_id,
            member.c.channel.in_(channels),
            member.c.member == true(),
        )
        .exists()
    )


def _conflicts_of_members(tenant_id: str, tenant_no: Any, channels: Sequence[str]) -> FromClause:
    """The conflicts of the entities that are members of ``channels`` now, found from the channels' rows
    (``ix_entity_channels_tenant_channel_seq``, then ``ix_conflicts_tenant_entity``): a driver's page costs what
    its own deliveries have, not a walk of the tenant's conflict log looking for them.

    Only the columns a page filters and orders by, so the set is small to sort; the page's rows are read by their
    primary key after (``conflict_page``)."""
    # Materialized first: each channel's range of the index, whatever SQLite would otherwise make of the join.
    members = (
        select(ec.c.collection, ec.c.entity_id)
        .where(ec.c.tenant_no == tenant_no, ec.c.channel.in_(channels), ec.c.member == true())
        .cte("members")
        .prefix_with("MATERIALIZED")
    )
    c = conflicts.c
    return (
        select(c.seq, c.idx, c.collection, c.entity_id, c.field, c.kind, c.status)
        .where(c.tenant_id == tenant_id, tuple_(c.collection, c.entity_id).in_(select(*members.c)))
        .cte("member_conflicts")
        .prefix_with("MATERIALIZED")
    )


@functools.cache
def _channel_entities_query(by_collection: bool) -> Select[Any]:
    """A scoped pull's page: channel rows after the cursor joined to their entity rows (built once per shape).

    Channel rows and entity rows in one statement, so one snapshot: read apart, a push committing in between
    moved the entity past its channel row's seq, and the entity fell out of this page while the cursor went
    past it (a device then never saw that change).
    """
    joined_entities = ec.join(
        entities,
        (entities.c.tenant_no == ec.c.tenant_no)
        & (entities.c.collection == ec.c.collection)
        & (entities.c.entity_id == ec.c.entity_id),
    )
    return (
        select(entities, latest_seq_column(), ec.c.seq.label("member_seq"), ec.c.joined_seq)
        .select_from(joined_entities)
        .where(*_in_bound_channels(by_collection), ec.c.member == true(), ec.c.seq > bindparam("after"))
        .order_by(ec.c.seq, ec.c.collection, ec.c.entity_id)
        .limit(bindparam("limit"))
    )


@functools.cache
def _evictions_query(by_collection: bool) -> Select[Any]:
    """Entities that left the channels after the cursor and are in none of them now (built once per shape).

    The rows that left are found first, through ``ix_entity_channels_tenant_channel_seq`` (a range per channel
    after the cursor), in a ``MATERIALIZED`` CTE, then grouped. Written as one flat query, SQLite (which has no
    statistics unless someone runs ``ANALYZE``) grouped by walking the tenant's whole primary key instead, so
    every driver's pull read every channel row of the tenant: 90 µs at 1,000 deliveries, growing with the tenant.
    """
    still_visible = _member_in(ec.alias("m"), ec, bindparam("visible_channels", expanding=True))
    gone = (
        select(ec.c.collection, ec.c.entity_id, ec.c.seq)
        .where(
            *_in_bound_channels(by_collection), ec.c.member == false(), ec.c.seq > bindparam("after"), ~still_visible
        )
        .cte("gone")
        .prefix_with("MATERIALIZED")
    )
    left = func.max(gone.c.seq)
    return (
        select(gone.c.collection, gone.c.entity_id, left.label("seq"))
        .group_by(gone.c.collection, gone.c.entity_id)
        .order_by(left, gone.c.collection, gone.c.entity_id)
        .limit(bindparam("limit"))
    )


async def purge_channel_rows(conn: AsyncConnection, tenant_id: str, purged_seq: int) -> None:
    """Inside a purge: drop evictions no cursor can need, and rows of entities that no longer exist.

    Cursors older than ``purged_seq`` get a reset, so rows that left at or
    before it will never become an eviction again.
    """
    gone = ~(
        select(literal(1))
        .where(
            entities.c.tenant_no == ec.c.tenant_no,
            entities.c.collection == ec.c.collection,
            entities.c.entity_id == ec.c.entity_id,
        )
        .exists()
    )
    doomed = (sql_log.of_tenant(ec, tenant_id), ec.c.seq <= purged_seq, (ec.c.member == false()) | gone)
    await conn.execute(ec.delete().where(*doomed))
