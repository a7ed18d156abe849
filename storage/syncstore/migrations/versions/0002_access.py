"""Access control: per-entity channel membership; an index for data-subject export.

Revision ID: 0002_access
Revises: 0001
Create Date: 2025-11-23

A branch parallel to the admin migrations; the server upgrades to ``heads``.
Written by hand to match syncstore/tables.py.

Existing entities get no channel rows: their state is ciphertext, so SQL
cannot derive them. ``syncserver channels reindex`` builds them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_access"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = 128
LONG_ID = 256


def upgrade() -> None:
    op.create_table(
        "entity_channels",
        sa.Column("tenant_id", sa.String(length=ID), nullable=False),
        sa.Column("collection", sa.String(length=ID), nullable=False),
        sa.Column("entity_id", sa.String(length=LONG_ID), nullable=False),
        sa.Column("channel", sa.String(length=LONG_ID), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("joined_seq", sa.BigInteger(), nullable=False),
        sa.Column("member", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_entity_channels_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("tenant_id", "collection", "entity_id", "channel", name=op.f("pk_entity_channels")),
    )
    op.create_index("ix_entity_channels_tenant_channel_seq", "entity_channels", ["tenant_id", "channel", "seq"])
    op.create_index("ix_changes_tenant_user_seq", "changes", ["tenant_id", "user_sub", "seq"])


def downgrade() -> None:
    op.drop_index("ix_changes_tenant_user_seq", table_name="changes")
    op.drop_index("ix_entity_channels_tenant_channel_seq", table_name="entity_channels")
    op.drop_table("entity_channels")
