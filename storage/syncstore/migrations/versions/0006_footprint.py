"""Footprint: channel rows clustered on their key (SQLite), tombstones indexed alone.

Revision ID: 0006_footprint
Revises: 0002_access
Create Date: 2026-12-06

Written by hand to match syncstore/tables.py (ADR 0029):

* SQLite: ``entity_channels`` becomes a ``WITHOUT ROWID`` table. Its primary key
  (tenant, collection, entity, channel) is how a push session and the "still
  visible?" check find its rows, so the rows live in the key's b-tree and the
  separate key index, which repeated every string of the row, is gone. The table
  is rebuilt (copy, drop, rename) inside the migration's transaction.
* Both: ``ix_entities_tenant_tombstones`` holds only deleted entities (a partial
  index on ``(tenant_id, updated_at)``), the only rows ``purge_tombstones`` looks
  for, instead of one entry per entity.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_footprint"
down_revision: str | Sequence[str] | None = "0002_access"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = 128
LONG_ID = 256
COLUMNS = "tenant_id, collection, entity_id, channel, seq, joined_seq, member"


def upgrade() -> None:
    op.drop_index("ix_entities_tenant_tombstones", table_name="entities")
    op.create_index(
        "ix_entities_tenant_tombstones",
        "entities",
        ["tenant_id", "updated_at"],
        sqlite_where=sa.text("deleted = 1"),
        postgresql_where=sa.text("deleted = true"),
    )
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_channels(with_rowid=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_channels(with_rowid=True)
    op.drop_index("ix_entities_tenant_tombstones", table_name="entities")
    op.create_index("ix_entities_tenant_tombstones", "entities", ["tenant_id", "deleted", "updated_at"])


def _rebuild_channels(*, with_rowid: bool) -> None:
    op.create_table(
        "entity_channels_rebuilt",
        sa.Column("tenant_id", sa.String(length=ID), nullable=False),
        sa.Column("collection", sa.String(length=ID), nullable=False),
        sa.Column("entity_id", sa.String(length=LONG_ID), nullable=False),
        sa.Column("channel", sa.String(length=LONG_ID), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("joined_seq", sa.BigInteger(), nullable=False),
        sa.Column("member", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_entity_channels_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("tenant_id", "collection", "entity_id", "channel", name=op.f("pk_entity_channels")),
        sqlite_with_rowid=with_rowid,
    )
    op.execute(f"INSERT INTO entity_channels_rebuilt ({COLUMNS}) SELECT {COLUMNS} FROM entity_channels")
    op.drop_index("ix_entity_channels_tenant_channel_seq", table_name="entity_channels")
    op.drop_table("entity_channels")
    op.rename_table("entity_channels_rebuilt", "entity_channels")
    op.create_index("ix_entity_channels_tenant_channel_seq", "entity_channels", ["tenant_id", "channel", "seq"])
