"""Integrity: the change log's hash chain, signed checkpoints, and verification results.

Revision ID: 0005_integrity
Revises: 0001
Create Date: 2026-12-06

A branch parallel to the others; the server upgrades to ``heads``. Written by
hand to match syncstore/tables.py. Rows written before this revision keep a
null ``chain``: a tenant's chain starts at its first change pushed after it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_integrity"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = 128


def upgrade() -> None:
    op.add_column("tenants", sa.Column("chain_head", sa.LargeBinary(), nullable=True))
    op.add_column("entities", sa.Column("chain", sa.LargeBinary(), nullable=True))
    op.add_column("changes", sa.Column("chain", sa.LargeBinary(), nullable=True))
    op.create_table(
        "chain_checkpoints",
        sa.Column("tenant_id", sa.String(length=ID), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("head", sa.LargeBinary(), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("mac", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_chain_checkpoints_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("tenant_id", "seq", name=op.f("pk_chain_checkpoints")),
    )
    op.create_table(
        "verifications",
        sa.Column("tenant_id", sa.String(length=ID), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.BigInteger(), nullable=False),
        sa.Column("from_seq", sa.BigInteger(), nullable=False),
        sa.Column("to_seq", sa.BigInteger(), nullable=False),
        sa.Column("changes", sa.BigInteger(), nullable=False),
        sa.Column("entities", sa.BigInteger(), nullable=False),
        sa.Column("problems", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_verifications_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("tenant_id", "started_at", name=op.f("pk_verifications")),
    )


def downgrade() -> None:
    op.drop_table("verifications")
    op.drop_table("chain_checkpoints")
    op.drop_column("changes", "chain")
    op.drop_column("entities", "chain")
    op.drop_column("tenants", "chain_head")
