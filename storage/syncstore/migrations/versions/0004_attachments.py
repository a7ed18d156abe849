"""Attachments: upload state and blob index, and which entities referenced each attachment.

Revision ID: 0004_attachments
Revises: 0001
Create Date: 2026-12-06

A branch parallel to the others; the server upgrades to ``heads``. Written by
hand to match syncstore/tables.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_attachments"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = 128
LONG_ID = 256
TAG = 64


def upgrade() -> None:
    op.create_table(
        "attachments",
        sa.Column("tenant_id", sa.String(length=ID), nullable=False),
        sa.Column("id", sa.String(length=ID), nullable=False),
        sa.Column("user_sub", sa.String(length=LONG_ID), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("media_type", sa.String(length=TAG * 2), nullable=False),
        sa.Column("mac", sa.String(length=TAG), nullable=False),
        sa.Column("mac_version", sa.Integer(), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=TAG), nullable=False),
        sa.Column("upload_offset", sa.BigInteger(), nullable=False),
        sa.Column("chunk_bytes", sa.Integer(), nullable=False),
        sa.Column("blob_owner", sa.String(length=ID), nullable=True),
        sa.Column("code", sa.String(length=TAG), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("referenced_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_attachments_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_attachments")),
    )
    op.create_index("ix_attachments_tenant_mac", "attachments", ["tenant_id", "mac"])
    op.create_index("ix_attachments_tenant_state", "attachments", ["tenant_id", "state", "id"])
    op.create_table(
        "attachment_refs",
        sa.Column("tenant_id", sa.String(length=ID), nullable=False),
        sa.Column("attachment_id", sa.String(length=ID), nullable=False),
        sa.Column("collection", sa.String(length=ID), nullable=False),
        sa.Column("entity_id", sa.String(length=LONG_ID), nullable=False),
        sa.Column("seen_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_attachment_refs_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("tenant_id", "attachment_id", "collection", "entity_id", name=op.f("pk_attachment_refs")),
    )


def downgrade() -> None:
    op.drop_table("attachment_refs")
    op.drop_index("ix_attachments_tenant_state", table_name="attachments")
    op.drop_index("ix_attachments_tenant_mac", table_name="attachments")
    op.drop_table("attachments")
