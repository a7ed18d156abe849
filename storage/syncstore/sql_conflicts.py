"""One page of the conflict log: ``Store.conflicts`` and ``ChannelStore.conflicts_in_channels`` share its query.

Keyset pagination by ``(seq, idx)``. A page filtered by one entity (collection and entity id) reads that
entity's rows of ``ix_conflicts_tenant_entity`` first, in a ``MATERIALIZED`` CTE, and only then orders them.
Written flat, SQLite (which keeps no statistics unless someone runs ``ANALYZE``) walked the tenant's conflicts
in primary-key order to spare itself the sort, and tested each one: an entity's few conflicts cost a read of
the whole log. On SQLite a restricted reader's page (a driver's) looks in the next rows of the log first, up to
``window_end``, and if its page is not all there and the reader sees little of the log (``visible_in_window``),
finds the rest from its channels' entities (``among``; see ``SqlChannels.conflicts_in_channels``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, FromClause, Select, func, select, tuple_

from syncstore.records import ConflictFilter
from syncstore.tables import conflicts

FILTERED = ("collection", "entity_id", "field", "kind", "status")


def conflict_page(
    tenant_id: str,
    after: tuple[int, int] | None,
    limit: int,
    filters: ConflictFilter | None = None,
    visible: Callable[[FromClause], ColumnElement[bool]] | None = None,
    among: FromClause | None = None,
    until: tuple[int, int] | None = None,
) -> Select[Any]:
    """The tenant's conflicts after ``after`` that pass ``filters`` (and ``visible``, a condition on the rows'
    source: the channels of a restricted reader), ordered by ``(seq, idx)``, at most ``limit``.

    ``among``: find the page among these of the tenant's conflicts (a ``MATERIALIZED`` CTE of their ``seq``,
    ``idx`` and filtered columns) instead of the whole log, then read its rows by primary key. ``until``: only
    conflicts up to this ``(seq, idx)`` (a bounded walk of the log, see ``window_end``)."""
    if among is not None:
        keys = _filtered(among, after, filters).order_by(among.c.seq, among.c.idx).limit(limit).subquery("page")
        found = conflicts.join(
            keys,
            (conflicts.c.tenant_id == tenant_id) & (conflicts.c.seq == keys.c.seq) & (conflicts.c.idx == keys.c.idx),
        )
        return select(conflicts).select_from(found).order_by(conflicts.c.seq, conflicts.c.idx)
    source: FromClause = conflicts
    where: list[ColumnElement[bool]] = [conflicts.c.tenant_id == tenant_id]
    if filters is not None and filters.collection is not None and filters.entity_id is not None:
        source = (
            select(conflicts)
            .where(
                conflicts.c.tenant_id == tenant_id,
                conflicts.c.collection == filters.collection,
                conflicts.c.entity_id == filters.entity_id,
            )
            .cte("entity_conflicts")
            .prefix_with("MATERIALIZED")
        )
        where = []
    if visible is not None:
        where.append(visible(source))
    if until is not None:
        where.append(tuple_(source.c.seq, source.c.idx) <= tuple_(until[0], until[1]))
    return _filtered(source, after, filters, where).order_by(source.c.seq, source.c.idx).limit(limit)


def window_end(tenant_id: str, after: tuple[int, int] | None, window: int) -> Select[Any]:
    """The ``(seq, idx)`` of the ``window``-th of the tenant's conflicts after ``after`` (no row if there are fewer):
    read from the primary key alone (covering), about as costly as ``window`` index entries, whatever the page's
    filters (they would need the rows)."""
    c = conflicts.c
    return (
        select(c.seq, c.idx)
        .where(c.tenant_id == tenant_id, *([] if after is None else [tuple_(c.seq, c.idx) > tuple_(*after)]))
        .order_by(c.seq, c.idx)
        .offset(window - 1)
        .limit(1)
    )


def visible_in_window(
    tenant_id: str,
    after: tuple[int, int] | None,
    until: tuple[int, int],
    visible: Callable[[FromClause], ColumnElement[bool]],
    enough: int,
) -> Select[Any]:
    """How many of the tenant's conflicts after ``after`` and up to ``until`` pass ``visible`` (any filters aside),
    counting no further than ``enough``: a reader who sees much of the log answers after a few rows."""
    c = conflicts.c
    where = [c.tenant_id == tenant_id, tuple_(c.seq, c.idx) <= tuple_(*until), visible(conflicts)]
    if after is not None:
        where.append(tuple_(c.seq, c.idx) > tuple_(*after))
    found = select(c.seq).where(*where).order_by(c.seq, c.idx).limit(enough).subquery("found")
    return select(func.count()).select_from(found)


def _filtered(
    source: FromClause,
    after: tuple[int, int] | None,
    filters: ConflictFilter | None,
    where: list[ColumnElement[bool]] | None = None,
) -> Select[Any]:
    """``source``'s rows after ``after`` that pass ``filters`` (and ``where``)."""
    conditions = list(where or [])
    if after is not None:
        conditions.append(tuple_(source.c.seq, source.c.idx) > tuple_(after[0], after[1]))
    if filters is not None:
        conditions += [source.c[n] == getattr(filters, n) for n in FILTERED if getattr(filters, n) is not None]
    return select(source).where(*conditions)
