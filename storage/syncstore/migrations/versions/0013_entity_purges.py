"""Entity purges: where an entity's current life starts, after ``purge_tombstones`` deleted its tombstone.

Revision ID: 0013_entity_purges
Revises: 0012_sqlite_channel_statistics, 0003_admin
Create Date: 2026-12-08

Written by hand to match syncstore/tables.py. ``syncserver repair`` rebuilds an entity from its changes in
the log; after its tombstone was purged, the next change started it from nothing (a push finds no row), so
the rebuild must start after the purged tombstone. The log alone does not say whether a tombstone was purged
before the entity's next change (``purged_seq`` is a tenant-wide watermark, raised by other entities too):
``purge_tombstones`` now records it, per entity. Purges before this revision were not recorded: each tenant
with ``purged_seq > 0`` gets a row with an empty collection and entity id holding that watermark, and a
rebuild whose history would depend on such a purge refuses rather than guess.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_entity_purges"
# Also merges the ``0003_admin`` branch, so the migrations have one head again (``alembic upgrade head``).
down_revision: str | Sequence[str] | None = ("0012_sqlite_channel_statistics", "0003_admin")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = 128
LONG_ID = 256


def upgrade() -> None:
    op.create_table(
        "entity_purges",
        sa.Column("tenant_id", sa.String(length=ID), nullable=False),
        sa.Column("collection", sa.String(length=ID), nullable=False),
        sa.Column("entity_id", sa.String(length=LONG_ID), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_entity_purges_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("tenant_id", "collection", "entity_id", name=op.f("pk_entity_purges")),
    )
    op.execute(
        "INSERT INTO entity_purges (tenant_id, collection, entity_id, seq) "
        "SELECT id, '', '', purged_seq FROM tenants WHERE purged_seq > 0"
    )


def downgrade() -> None:
    op.drop_table("entity_purges")
