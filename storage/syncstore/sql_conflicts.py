"""One page of the conflict log: ``Store.conflicts`` and ``ChannelStore.conflicts_in_channels`` share its query.

Keyset pagination by ``(seq, idx)``. A page filtered by one entity (collection and entity id) reads that
entity's rows of ``ix_conflicts_tenant_entity`` first, in a ``MATERIALIZED`` CTE, and only then orders them.
Written flat, SQLite (which keeps no statistics unless someone runs ``ANALYZE``) walked the tenant's conflicts
in primary-key order to spare itself the sort, and tested each one: an entity's few conflicts cost a read of
the whole log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, FromClause, Select, select, tuple_

from syncstore.records import ConflictFilter
from syncstore.tables import conflicts

FILTERED = ("collection", "entity_id", "field", "kind", "status")


def conflict_page(
    tenant_id: str,
    after: tuple[int, int] | None,
    limit: int,
    filters: ConflictFilter | None = None,
    visible: Callable[[FromClause], ColumnElement[bool]] | None = None,
) -> Select[Any]:
    """The tenant's conflicts after ``after`` that pass ``filters`` (and ``visible``, a condition on the rows'
    source: the channels of a restricted reader), ordered by ``(seq, idx)``, at most ``limit``."""
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
    if after is not None:
        where.append(tuple_(source.c.seq, source.c.idx) > tuple_(after[0], after[1]))
    if filters is not None:
        where += [source.c[name] == getattr(filters, name) for name in FILTERED if getattr(filters, name) is not None]
    return select(source).where(*where).order_by(source.c.seq, source.c.idx).limit(limit)
