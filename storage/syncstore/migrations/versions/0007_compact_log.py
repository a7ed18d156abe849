"""Compact change log: the log names its tenant, replica and user by number, the entity tables their tenant.

Revision ID: 0007_compact_log
Revises: 0005_integrity, 0006_footprint
Create Date: 2026-12-06

Written by hand to match syncstore/tables.py (ADR 0033):

* ``tenants.no``: a number per tenant (1, 2, ... in id order for the tenants that exist), unique.
  SQLite can add a ``NOT NULL`` column only with a default, so the column has ``DEFAULT 0``
  on both databases; 0 never names a tenant (the store always gives a number).
* ``log_names``: every replica id and user sub of a tenant's log, numbered once.
* ``changes`` is rebuilt: ``tenant_no``, ``replica_no`` and ``user_no`` replace ``tenant_id``,
  ``replica_id`` and ``user_sub``, in the row and in its keys and indexes. The rows are copied
  tenant by tenant in seq ranges, with a progress line per range, then the old table is dropped
  and the new one takes its name.
* ``entities`` and ``entity_channels`` are rebuilt the same way with ``tenant_no`` for
  ``tenant_id`` (``entity_channels`` still ``WITHOUT ROWID`` on SQLite). All three put their
  eight-byte integers first, then the four-byte ones: no alignment padding on PostgreSQL.

All of it runs in the migration's one transaction (``syncstore.migrate``): a crash or a kill
leaves the previous schema whole, and the next start converts again from the beginning. Nothing
half-converted is ever visible.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_compact_log"
down_revision: str | Sequence[str] | None = ("0005_integrity", "0006_footprint")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = 128
LONG_ID = 256
RANGE = 50_000
"""Seqs copied per statement (one progress line each)."""

log = logging.getLogger("syncstore.migrate")

COMMON = "seq, change_id, collection, entity_id, n, hlc_wall, hlc_counter, context, key_version, payload, created_at, chain"


def _common(prefix: str) -> str:
    return ", ".join(f"{prefix}.{c.strip()}" for c in COMMON.split(","))


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.add_column("tenants", sa.Column("no", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.execute("UPDATE tenants SET no = (SELECT count(*) FROM tenants t2 WHERE t2.id <= tenants.id)")
    op.create_index("uq_tenants_no", "tenants", ["no"], unique=True)
    op.create_table(
        "log_names",
        sa.Column("tenant_id", sa.String(length=ID), nullable=False),
        sa.Column("no", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=LONG_ID), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_log_names_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("tenant_id", "no", name=op.f("pk_log_names")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_log_names_tenant_id_name")),
    )
    op.execute(
        "INSERT INTO log_names (tenant_id, no, name)"
        " SELECT tenant_id, row_number() OVER (PARTITION BY tenant_id ORDER BY name), name FROM"
        " (SELECT tenant_id, replica_id AS name FROM changes UNION SELECT tenant_id, user_sub FROM changes) AS used"
    )
    suffix = "" if sqlite else "_new"
    # Eight-byte integers first, then four-byte ones, then the variable-length columns: PostgreSQL
    # aligns each fixed-width column to its size, so this order leaves no padding inside a row.
    op.create_table(
        "changes_new",
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("hlc_wall", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("tenant_no", sa.Integer(), nullable=False),
        sa.Column("replica_no", sa.Integer(), nullable=False),
        sa.Column("hlc_counter", sa.Integer(), nullable=False),
        sa.Column("user_no", sa.Integer(), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("change_id", sa.String(length=ID), nullable=False),
        sa.Column("collection", sa.String(length=ID), nullable=False),
        sa.Column("entity_id", sa.String(length=LONG_ID), nullable=False),
        sa.Column("context", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("chain", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(["tenant_no"], ["tenants.no"], name="fk_changes_tenant_no_tenants" + suffix),
        sa.PrimaryKeyConstraint("tenant_no", "seq", name="pk_changes" + suffix),
        sa.UniqueConstraint("tenant_no", "replica_no", "n", name="uq_changes_tenant_no_replica_no_n" + suffix),
    )
    _copy(
        f"INSERT INTO changes_new (tenant_no, replica_no, user_no, {COMMON})"
        f" SELECT t.no, r.no, u.no, {_common('c')} FROM changes c"
        " JOIN tenants t ON t.id = c.tenant_id"
        " JOIN log_names r ON r.tenant_id = c.tenant_id AND r.name = c.replica_id"
        " JOIN log_names u ON u.tenant_id = c.tenant_id AND u.name = c.user_sub"
        " WHERE c.tenant_id = :tenant AND c.seq > :low AND c.seq <= :high",
        "changes",
        "changes_new",
    )
    _replace_changes("changes_new", suffix, ("tenant_no", "replica_no", "user_no"))
    _rebuild_entities(numbered=True)
    _rebuild_channels(numbered=True)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    suffix = "" if sqlite else "_old"
    op.create_table(
        "changes_old",
        sa.Column("tenant_id", sa.String(length=ID), nullable=False),
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
        sa.Column("chain", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_changes_tenant_id_tenants" + suffix),
        sa.PrimaryKeyConstraint("tenant_id", "seq", name="pk_changes" + suffix),
        sa.UniqueConstraint("tenant_id", "replica_id", "n", name="uq_changes_tenant_id_replica_id_n" + suffix),
    )
    _copy(
        f"INSERT INTO changes_old (tenant_id, replica_id, user_sub, {COMMON})"
        f" SELECT t.id, r.name, u.name, {_common('c')} FROM changes c"
        " JOIN tenants t ON t.no = c.tenant_no"
        " JOIN log_names r ON r.tenant_id = t.id AND r.no = c.replica_no"
        " JOIN log_names u ON u.tenant_id = t.id AND u.no = c.user_no"
        " WHERE t.id = :tenant AND c.seq > :low AND c.seq <= :high",
        "changes",
        "changes_old",
    )
    _replace_changes("changes_old", suffix, ("tenant_id", "replica_id", "user_sub"))
    _rebuild_entities(numbered=False)
    _rebuild_channels(numbered=False)
    op.drop_table("log_names")
    op.drop_index("uq_tenants_no", table_name="tenants")
    op.execute("ALTER TABLE tenants DROP COLUMN no")  # SQLite 3.35 and later drop a column in place


ENTITY_COLUMNS = "seq, updated_at, key_version, deleted, collection, entity_id, state, vv, chain"
CHANNEL_COLUMNS = "seq, joined_seq, member, collection, entity_id, channel"


def _tenant_column(numbered: bool) -> sa.Column[object]:
    if numbered:
        return sa.Column("tenant_no", sa.Integer(), nullable=False)
    return sa.Column("tenant_id", sa.String(length=ID), nullable=False)


def _tenant_fk(table: str, numbered: bool, suffix: str) -> sa.ForeignKeyConstraint:
    column, target = ("tenant_no", "tenants.no") if numbered else ("tenant_id", "tenants.id")
    return sa.ForeignKeyConstraint([column], [target], name=f"fk_{table}_{column}_tenants{suffix}")


def _rebuild_entities(*, numbered: bool) -> None:
    """``entities`` with its tenant by number (``numbered``) or, going down, by id again."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    suffix = "" if sqlite else "_rebuilt"
    tenant = _tenant_column(numbered)
    op.create_table(
        "entities_rebuilt",
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        *([tenant] if numbered else []),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        *([] if numbered else [tenant]),
        sa.Column("collection", sa.String(length=ID), nullable=False),
        sa.Column("entity_id", sa.String(length=LONG_ID), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("vv", sa.Text(), nullable=False),
        sa.Column("chain", sa.LargeBinary(), nullable=True),
        _tenant_fk("entities", numbered, suffix),
        sa.PrimaryKeyConstraint(tenant.name, "collection", "entity_id", name="pk_entities" + suffix),
    )
    _copy(_copy_statement("entities", ENTITY_COLUMNS, numbered), "entities", "entities_rebuilt")
    op.drop_index("ix_entities_tenant_tombstones", table_name="entities")
    op.drop_index("ix_entities_tenant_seq", table_name="entities")
    op.drop_table("entities")
    op.rename_table("entities_rebuilt", "entities")
    if suffix:
        for name in (f"fk_entities_{tenant.name}_tenants", "pk_entities"):
            op.execute(f"ALTER TABLE entities RENAME CONSTRAINT {name}{suffix} TO {name}")
    op.create_index("ix_entities_tenant_seq", "entities", [tenant.name, "seq"])
    op.create_index(
        "ix_entities_tenant_tombstones",
        "entities",
        [tenant.name, "updated_at"],
        sqlite_where=sa.text("deleted = 1"),
        postgresql_where=sa.text("deleted = true"),
    )


def _rebuild_channels(*, numbered: bool) -> None:
    """``entity_channels`` with its tenant by number (``numbered``) or, going down, by id again; on SQLite
    still ``WITHOUT ROWID`` (0006_footprint)."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    suffix = "" if sqlite else "_rebuilt"
    tenant = _tenant_column(numbered)
    op.create_table(
        "entity_channels_rebuilt",
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("joined_seq", sa.BigInteger(), nullable=False),
        tenant,
        sa.Column("member", sa.Boolean(), nullable=False),
        sa.Column("collection", sa.String(length=ID), nullable=False),
        sa.Column("entity_id", sa.String(length=LONG_ID), nullable=False),
        sa.Column("channel", sa.String(length=LONG_ID), nullable=False),
        _tenant_fk("entity_channels", numbered, suffix),
        sa.PrimaryKeyConstraint(
            tenant.name, "collection", "entity_id", "channel", name="pk_entity_channels" + suffix
        ),
        sqlite_with_rowid=False,
    )
    # No index leads with (tenant, seq) here: one statement per tenant, not a scan of it per range.
    statement = _copy_statement("entity_channels", CHANNEL_COLUMNS, numbered, by_seq=False)
    _copy(statement, "entity_channels", "entity_channels_rebuilt", by_seq=False)
    op.drop_index("ix_entity_channels_tenant_channel_seq", table_name="entity_channels")
    op.drop_table("entity_channels")
    op.rename_table("entity_channels_rebuilt", "entity_channels")
    if suffix:
        for name in (f"fk_entity_channels_{tenant.name}_tenants", "pk_entity_channels"):
            op.execute(f"ALTER TABLE entity_channels RENAME CONSTRAINT {name}{suffix} TO {name}")
    op.create_index("ix_entity_channels_tenant_channel_seq", "entity_channels", [tenant.name, "channel", "seq"])


def _copy_statement(table: str, columns: str, numbered: bool, *, by_seq: bool = True) -> str:
    """Copy one tenant's rows of ``table`` (in a seq range when ``by_seq``) into ``<table>_rebuilt``, the
    tenant by number (``numbered``) or by id."""
    prefixed = ", ".join(f"x.{c.strip()}" for c in columns.split(","))
    in_range = " AND x.seq > :low AND x.seq <= :high" if by_seq else ""
    if numbered:
        return (
            f"INSERT INTO {table}_rebuilt (tenant_no, {columns}) SELECT t.no, {prefixed} FROM {table} x"  # noqa: S608
            f" JOIN tenants t ON t.id = x.tenant_id WHERE x.tenant_id = :tenant{in_range}"
        )
    return (
        f"INSERT INTO {table}_rebuilt (tenant_id, {columns}) SELECT t.id, {prefixed} FROM {table} x"  # noqa: S608
        f" JOIN tenants t ON t.no = x.tenant_no WHERE t.id = :tenant{in_range}"
    )

def _replace_changes(table: str, suffix: str, names: tuple[str, str, str]) -> None:
    """``table`` (filled) becomes ``changes``: the old table and its indexes go, its constraints (named with
    ``suffix`` on PostgreSQL, where constraint names are unique per schema) take their names, and the two
    indexes are built on the ``(tenant, replica, user)`` columns ``names``."""
    tenant, replica, user = names
    op.drop_index("ix_changes_tenant_user_seq", table_name="changes")
    op.drop_index("ix_changes_tenant_entity_seq", table_name="changes")
    op.drop_table("changes")
    op.rename_table(table, "changes")
    if suffix:
        for name in (f"fk_changes_{tenant}_tenants", "pk_changes", f"uq_changes_{tenant}_{replica}_n"):
            op.execute(f"ALTER TABLE changes RENAME CONSTRAINT {name}{suffix} TO {name}")
    op.create_index("ix_changes_tenant_entity_seq", "changes", [tenant, "collection", "entity_id", "seq"])
    op.create_index("ix_changes_tenant_user_seq", "changes", [tenant, user, "seq"])


def _copy(statement: str, source: str, target: str, *, by_seq: bool = True) -> None:
    """Run the copy ``statement`` for every tenant, in seq ranges of ``RANGE`` when ``by_seq`` (the source
    has an index on the tenant and seq), else in one statement per tenant; log progress; fail (and so roll
    everything back) unless every row of ``source`` arrived in ``target``."""
    conn = op.get_bind()
    tenants = conn.execute(sa.text("SELECT id, last_seq FROM tenants ORDER BY id")).all()
    total = sum(last for _, last in tenants)
    done = 0
    for tenant, last_seq in tenants:
        ranges = [(low, low + RANGE) for low in range(0, last_seq, RANGE)] if by_seq else [(0, last_seq)]
        for low, high in ranges:
            conn.execute(sa.text(statement), {"tenant": tenant, "low": low, "high": high})
            done += min(high, last_seq) - low
            log.info(
                "0007_compact_log: %s rows of %s: %d of %d seqs (%.0f %%)",
                source,
                tenant,
                done,
                total,
                100 * done / max(total, 1),
            )
    # Only identifiers of this migration are interpolated.
    before, after = (conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in (source, target))  # noqa: S608
    if before != after:
        raise RuntimeError(f"0007_compact_log copied {after} of the {before} rows of {source}; nothing was changed")
