"""Initial schema: tenants, keys, replicas, entities, change log, conflicts, dead letters, audit log.

Revision ID: 0001
Revises:
Create Date: 2025-11-22

Written by hand to match syncstore/tables.py; tests/contract/test_schema.py
checks that a migrated database has exactly that schema.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = 128
LONG_ID = 256
TAG = 64


def _tenant_id(table: str) -> tuple[sa.Column[str], sa.ForeignKeyConstraint]:
    return (
        sa.Column("tenant_id", sa.String(length=ID), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f(f"fk_{table}_tenant_id_tenants")),
    )


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(length=ID), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("purged_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
    )

    op.create_table(
        "tenant_keys",
        *_tenant_id("tenant_keys"),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("master_key_id", sa.String(length=LONG_ID), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=TAG), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "version", name=op.f("pk_tenant_keys")),
    )

    op.create_table(
        "replicas",
        *_tenant_id("replicas"),
        sa.Column("replica_id", sa.String(length=ID), nullable=False),
        sa.Column("owner", sa.String(length=LONG_ID), nullable=False),
        sa.Column("hwm", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "replica_id", name=op.f("pk_replicas")),
    )

    op.create_table(
        "entities",
        *_tenant_id("entities"),
        sa.Column("collection", sa.String(length=ID), nullable=False),
        sa.Column("entity_id", sa.String(length=LONG_ID), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("vv", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "collection", "entity_id", name=op.f("pk_entities")),
    )
    op.create_index("ix_entities_tenant_seq", "entities", ["tenant_id", "seq"])
    op.create_index("ix_entities_tenant_tombstones", "entities", ["tenant_id", "deleted", "updated_at"])

    op.create_table(
        "changes",
        *_tenant_id("changes"),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("change_id", sa.String(length=ID), nullable=False),
        sa.Column("collection", sa.String(length=ID), nullable=False),
        sa.Column("entity_id", sa.String(length=LONG_ID), nullable=False),
        sa.Column("replica_id", sa.String(length=ID), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("hlc_wall", sa.BigInteger(), nullable=False),
        sa.Column("hlc_counter", sa.Integer(), nullable=False),
        sa.Column("user_sub", sa.String(length=LONG_ID), nullable=False),
        sa.Column("context", sa.Text(), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "seq", name=op.f("pk_changes")),
        sa.UniqueConstraint("tenant_id", "replica_id", "n", name=op.f("uq_changes_tenant_id_replica_id_n")),
    )
    op.create_index("ix_changes_tenant_entity_seq", "changes", ["tenant_id", "collection", "entity_id", "seq"])

    op.create_table(
        "conflicts",
        *_tenant_id("conflicts"),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("collection", sa.String(length=ID), nullable=False),
        sa.Column("entity_id", sa.String(length=LONG_ID), nullable=False),
        sa.Column("field", sa.String(length=LONG_ID), nullable=True),
        sa.Column("kind", sa.String(length=TAG), nullable=False),
        sa.Column("rule", sa.String(length=TAG), nullable=False),
        sa.Column("status", sa.String(length=TAG), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("details", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "seq", "idx", name=op.f("pk_conflicts")),
    )
    op.create_index("ix_conflicts_tenant_entity", "conflicts", ["tenant_id", "collection", "entity_id"])

    op.create_table(
        "dead_letters",
        *_tenant_id("dead_letters"),
        sa.Column("replica_id", sa.String(length=ID), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("change_id", sa.String(length=ID), nullable=False),
        sa.Column("user_sub", sa.String(length=LONG_ID), nullable=False),
        sa.Column("collection", sa.String(length=ID), nullable=False),
        sa.Column("entity_id", sa.String(length=LONG_ID), nullable=False),
        sa.Column("code", sa.String(length=TAG), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=TAG), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "replica_id", "n", name=op.f("pk_dead_letters")),
    )
    op.create_index("ix_dead_letters_tenant_created", "dead_letters", ["tenant_id", "created_at"])

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=ID), nullable=True),
        sa.Column("actor", sa.String(length=LONG_ID), nullable=False),
        sa.Column("action", sa.String(length=TAG), nullable=False),
        sa.Column("target", sa.String(length=512), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_tenant_created", "audit_log", ["tenant_id", "created_at"])


def downgrade() -> None:
    for table in ("audit_log", "dead_letters", "conflicts", "changes", "entities", "replicas", "tenant_keys"):
        op.drop_table(table)
    op.drop_table("tenants")
