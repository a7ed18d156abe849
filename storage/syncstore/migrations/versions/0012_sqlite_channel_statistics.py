"""SQLite: tell the query planner how channel and entity rows are spread (``sqlite_stat1``).

Revision ID: 0012_sqlite_channel_statistics
Revises: 0011_attachment_chunk_tokens
Create Date: 2026-12-07

Written by hand. SQLite keeps no statistics unless someone runs ``ANALYZE``, and without them it guesses that
a tenant (``tenant_no = ?``) has about ten channel rows. A pull or conflict page of a token with two or more
channels then walked every channel row of the tenant in primary-key order (it is covering) instead of seeking
each channel's range of ``ix_entity_channels_tenant_channel_seq``. One token channel happened to pick the index.

These rows say what a depot's database looks like: half a million entities, fifty thousand per tenant; a
million channel rows, a hundred per channel, two per entity (the SQLite documentation's own remedy:
statistics written by hand, https://sqlite.org/queryplanner-ng.html). Both tables need them: with the
channel rows' alone, the planner took the tenant's entities for the smaller side of a driver's page and
walked them. They only rank the indexes; an ``ANALYZE`` run by an operator
replaces them with measured ones, which rank them the same way once a tenant has more than a few channels.
PostgreSQL keeps its own statistics (autovacuum): nothing to do there.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_sqlite_channel_statistics"
down_revision: str | Sequence[str] | None = "0011_attachment_chunk_tokens"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATISTICS = {
    # (table, index): rows, then rows per distinct value of each prefix of the index's columns
    ("entity_channels", "ix_entity_channels_tenant_channel_seq"): "1000000 100000 100 1",  # tenant, channel, seq
    ("entity_channels", "entity_channels"): "1000000 100000 50000 2 1",  # primary key: tenant, collection, id, channel
    ("entities", "sqlite_autoindex_entities_1"): "500000 50000 25000 1",  # primary key: tenant, collection, id
    ("entities", "ix_entities_tenant_seq"): "500000 50000 1",  # tenant, seq
    ("entities", "ix_entities_tenant_tombstones"): "5000 500 1",  # deleted ones: tenant, updated_at
}
TABLES = sorted({table for table, _ in STATISTICS})


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("ANALYZE sqlite_schema")  # creates sqlite_stat1 if it is not there; analyzes no table
    for table in TABLES:
        op.execute(sa.text("DELETE FROM sqlite_stat1 WHERE tbl = :tbl").bindparams(tbl=table))
    for (table, index), stat in STATISTICS.items():
        op.execute(
            sa.text("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (:tbl, :idx, :stat)").bindparams(
                tbl=table, idx=index, stat=stat
            )
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        op.execute(sa.text("DELETE FROM sqlite_stat1 WHERE tbl = :tbl").bindparams(tbl=table))
