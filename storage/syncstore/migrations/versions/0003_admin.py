"""Admin tools: conflict overrides, and an index for an audit target's trail.

Revision ID: 0003_admin
Revises: 0001
Create Date: 2025-11-23

A branch parallel to the access-control migrations; the server upgrades to
``heads``. Written by hand to match syncstore/tables.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_admin"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = 128
LONG_ID = 256


def upgrade() -> None:
    op.create_table(
        "conflict_overrides",
        sa.Column("tenant_id", sa.String(length=ID), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=LONG_ID), nullable=False),
        sa.Column("change_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_conflict_overrides_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", "seq", "idx", name=op.f("pk_conflict_overrides")),
    )
    op.create_index("ix_audit_log_tenant_target", "audit_log", ["tenant_id", "target", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_tenant_target", table_name="audit_log")
    op.drop_table("conflict_overrides")
