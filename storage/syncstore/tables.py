"""The relational schema, as SQLAlchemy Core tables (no ORM).

``migrations/versions`` must create exactly this; ``tests/contract/test_schema.py``
compares a migrated database against this module and fails on any difference.
Change the schema by editing this file *and* adding a migration.

Pitfalls:

* ``String(n)`` lengths are enforced by PostgreSQL but not by SQLite; the server
  validates id lengths before they get here.
* JSON columns (``vv``, ``context``) are ``Text`` holding msgspec-encoded JSON
  (see ``rows.py``), not a JSON type, so both backends store the same bytes.
* Payload columns (``state``, ``payload``, ``details``, ``wrapped``) hold
  ciphertext only; see ``SCHEMA.md``.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    Label,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
    text,
    true,
)

ID = 128
"""Length of ids: tenants, replicas, collections, change ids."""
LONG_ID = 256
"""Length of entity ids, user subs and key ids, which come from outside."""
TAG = 64
"""Length of enum-like values: states, kinds, rules, codes."""

# Explicit constraint names keep alembic's autogenerate diffs stable across
# backends (SQLite reflects unnamed constraints differently from PostgreSQL).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _tenant_fk() -> Column[str]:
    return Column("tenant_id", String(ID), ForeignKey("tenants.id"), nullable=False)


tenants = Table(
    "tenants",
    metadata,
    Column("id", String(ID), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("purged_seq", BigInteger, nullable=False),
    # The change log's hash chain: the link of the change at last_seq (null before the first chained change).
    Column("chain_head", LargeBinary, nullable=True),
    # A small number naming the tenant in the change log, its largest table (0007_compact_log). The default
    # is there because SQLite adds a NOT NULL column only with one; 0 never names a tenant.
    Column("no", Integer, nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("id"),
    Index("uq_tenants_no", "no", unique=True),
)

tenant_keys = Table(
    "tenant_keys",
    metadata,
    _tenant_fk(),
    Column("version", Integer, nullable=False),
    Column("wrapped", LargeBinary, nullable=False),
    Column("master_key_id", String(LONG_ID), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("state", String(TAG), nullable=False),
    Column("dictionary", LargeBinary, nullable=True),
    PrimaryKeyConstraint("tenant_id", "version"),
)

replicas = Table(
    "replicas",
    metadata,
    _tenant_fk(),
    Column("replica_id", String(ID), nullable=False),
    Column("owner", String(LONG_ID), nullable=False),
    Column("hwm", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant_id", "replica_id"),
)


def _tenant_no() -> Column[int]:
    """The tenant by number (``tenants.no``), in the tables that hold a row per entity or change (ADR 0033)."""
    return Column("tenant_no", Integer, ForeignKey("tenants.no"), nullable=False)


entities = Table(
    "entities",
    metadata,
    # Eight-byte integers, four-byte ones, then the rest: no alignment padding on PostgreSQL.
    Column("seq", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    _tenant_no(),
    Column("key_version", Integer, nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("collection", String(ID), nullable=False),
    Column("entity_id", String(LONG_ID), nullable=False),
    Column("state", LargeBinary, nullable=False),
    Column("vv", Text, nullable=False),
    # The chain link of the change at ``seq`` (bound into the state's associated data); null before the chain.
    Column("chain", LargeBinary, nullable=True),
    PrimaryKeyConstraint("tenant_no", "collection", "entity_id"),
    # pull: entities changed after a cursor, in seq order.
    Index("ix_entities_tenant_seq", "tenant_no", "seq"),
)

# purge_tombstones: deleted entities older than a cutoff. Partial: live entities, the vast majority, have no
# entry (migration 0006_footprint). The query's ``deleted = true`` term is what lets the planner use it.
Index(
    "ix_entities_tenant_tombstones",
    entities.c.tenant_no,
    entities.c.updated_at,
    sqlite_where=entities.c.deleted == true(),
    postgresql_where=entities.c.deleted == true(),
)

log_names = Table(
    "log_names",
    metadata,
    _tenant_fk(),
    Column("no", Integer, nullable=False),
    Column("name", String(LONG_ID), nullable=False),
    PrimaryKeyConstraint("tenant_id", "no"),
    UniqueConstraint("tenant_id", "name"),
)
"""The replica ids and user subs of a tenant's change log, each numbered once (0007_compact_log, ADR 0033):
a change row and its indexes hold the numbers, not the strings."""

changes = Table(
    "changes",
    metadata,
    # Eight-byte integers, four-byte ones, then the rest: no alignment padding on PostgreSQL.
    Column("seq", BigInteger, nullable=False),
    Column("n", BigInteger, nullable=False),
    Column("hlc_wall", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    _tenant_no(),
    # Numbers of ``log_names``: the dot's replica and who pushed it.
    Column("replica_no", Integer, nullable=False),
    Column("hlc_counter", Integer, nullable=False),
    Column("user_no", Integer, nullable=False),
    Column("key_version", Integer, nullable=False),
    Column("change_id", String(ID), nullable=False),
    Column("collection", String(ID), nullable=False),
    Column("entity_id", String(LONG_ID), nullable=False),
    Column("context", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    # This change's link in the tenant's hash chain (bound into the payload's associated data).
    Column("chain", LargeBinary, nullable=True),
    # A change id that is a UUID in canonical form, as its 16 bytes; ``change_id`` then says which form
    # (ADR 0039, ``rows.pack_change_id``).
    Column("change_uuid", LargeBinary, nullable=True),
    PrimaryKeyConstraint("tenant_no", "seq"),
    # A dot (replica, counter) is applied at most once; also serves dot_change_id.
    UniqueConstraint("tenant_no", "replica_no", "n"),
    # An entity's history.
    Index("ix_changes_tenant_entity_seq", "tenant_no", "collection", "entity_id", "seq"),
)
"""The change log, keyed by numbers (ADR 0033): ``tenants.no`` and ``log_names`` give the strings back
(``syncstore.sql_log``)."""

conflicts = Table(
    "conflicts",
    metadata,
    _tenant_fk(),
    Column("seq", BigInteger, nullable=False),
    Column("idx", Integer, nullable=False),
    Column("collection", String(ID), nullable=False),
    Column("entity_id", String(LONG_ID), nullable=False),
    Column("field", String(LONG_ID), nullable=True),
    Column("kind", String(TAG), nullable=False),
    Column("rule", String(TAG), nullable=False),
    Column("status", String(TAG), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("key_version", Integer, nullable=False),
    Column("details", LargeBinary, nullable=False),
    PrimaryKeyConstraint("tenant_id", "seq", "idx"),
    Index("ix_conflicts_tenant_entity", "tenant_id", "collection", "entity_id"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    _tenant_fk(),
    Column("replica_id", String(ID), nullable=False),
    Column("n", BigInteger, nullable=False),
    Column("change_id", String(ID), nullable=False),
    Column("user_sub", String(LONG_ID), nullable=False),
    Column("collection", String(ID), nullable=False),
    Column("entity_id", String(LONG_ID), nullable=False),
    Column("code", String(TAG), nullable=False),
    Column("message", Text, nullable=False),
    Column("key_version", Integer, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("status", String(TAG), nullable=False),
    PrimaryKeyConstraint("tenant_id", "replica_id", "n"),
    # Listing, newest first.
    Index("ix_dead_letters_tenant_created", "tenant_id", "created_at"),
)

audit_log = Table(
    "audit_log",
    metadata,
    # Integer, not BigInteger: only INTEGER PRIMARY KEY is SQLite's rowid alias
    # that autoincrements.
    Column("id", Integer, autoincrement=True, nullable=False),
    # No foreign key: the audit trail must outlive a deleted tenant; NULL for
    # actions that concern no single tenant.
    Column("tenant_id", String(ID), nullable=True),
    Column("actor", String(LONG_ID), nullable=False),
    Column("action", String(TAG), nullable=False),
    Column("target", String(512), nullable=False),
    Column("details", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("id"),
    Index("ix_audit_log_tenant_created", "tenant_id", "created_at"),
)

# --- admin (migration 0003_admin) -------------------------------------------

conflict_overrides = Table(
    "conflict_overrides",
    metadata,
    _tenant_fk(),
    Column("seq", BigInteger, nullable=False),
    Column("idx", Integer, nullable=False),
    Column("actor", String(LONG_ID), nullable=False),
    # The seq of the server change that carried the admin's choice.
    Column("change_seq", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant_id", "seq", "idx"),
)

# An action's trail: every audit entry about one conflict or dead letter.
Index("ix_audit_log_tenant_target", audit_log.c.tenant_id, audit_log.c.target, audit_log.c.id)

# --- access control and key lifecycle (migration 0002_access) ----------------

entity_channels = Table(
    "entity_channels",
    metadata,
    # While a member: the entity's latest seq (so pull can scan a channel by seq);
    # once it left: the seq of the change that moved it out (an eviction).
    Column("seq", BigInteger, nullable=False),
    Column("joined_seq", BigInteger, nullable=False),
    _tenant_no(),
    Column("member", Boolean, nullable=False),
    Column("collection", String(ID), nullable=False),
    Column("entity_id", String(LONG_ID), nullable=False),
    Column("channel", String(LONG_ID), nullable=False),
    # Also serves the push session's per-entity lookup and the "still visible?" check.
    PrimaryKeyConstraint("tenant_no", "collection", "entity_id", "channel"),
    # Scoped pull and evictions: a channel's rows changed after a cursor.
    Index("ix_entity_channels_tenant_channel_seq", "tenant_no", "channel", "seq"),
    # SQLite: the rows live in the primary key's b-tree, with no second copy of the key (0006_footprint).
    sqlite_with_rowid=False,
)

# Data-subject export: every change one user made, in seq order.
Index("ix_changes_tenant_user_seq", changes.c.tenant_no, changes.c.user_no, changes.c.seq)

# Attachments (see syncstore/attachments.py): one row per device-chosen attachment id. The bytes live
# in a blob store, sealed in chunks; ``blob_owner`` names the attachment whose objects hold them
# (itself, or an earlier one with equal content: ``mac`` is a keyed hash, never the plain SHA-256).
attachments = Table(
    "attachments",
    metadata,
    _tenant_fk(),
    Column("id", String(ID), nullable=False),
    Column("user_sub", String(LONG_ID), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("media_type", String(TAG * 2), nullable=False),
    Column("mac", String(TAG), nullable=False),
    Column("mac_version", Integer, nullable=False),
    Column("key_version", Integer, nullable=False),
    Column("state", String(TAG), nullable=False),
    Column("upload_offset", BigInteger, nullable=False),
    Column("chunk_bytes", Integer, nullable=False),
    Column("blob_owner", String(ID), nullable=True),
    Column("code", String(TAG), nullable=True),
    Column("message", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("referenced_at", BigInteger, nullable=True),
    # Which PATCH's objects hold which chunks (``AttachmentRecord.chunk_tokens``); null: objects without a token.
    Column("chunk_tokens", Text, nullable=True),
    PrimaryKeyConstraint("tenant_id", "id"),
    # Dedup: find an available blob with this keyed hash.
    Index("ix_attachments_tenant_mac", "tenant_id", "mac"),
    # blob_users: the rows that read an owner's objects (every upload's creation and first PATCH ask).
    Index("ix_attachments_tenant_blob_owner", "tenant_id", "blob_owner"),
    Index("ix_attachments_tenant_state", "tenant_id", "state", "id"),
)

attachment_refs = Table(
    "attachment_refs",
    metadata,
    _tenant_fk(),
    Column("attachment_id", String(ID), nullable=False),
    Column("collection", String(ID), nullable=False),
    Column("entity_id", String(LONG_ID), nullable=False),
    Column("seen_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant_id", "attachment_id", "collection", "entity_id"),
)

chain_checkpoints = Table(
    "chain_checkpoints",
    metadata,
    _tenant_fk(),
    Column("seq", BigInteger, nullable=False),
    Column("head", LargeBinary, nullable=False),
    Column("key_version", Integer, nullable=False),
    Column("mac", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant_id", "seq"),
)
"""Signed checkpoints of the change log's hash chain: (seq, head link), MAC under a tenant key."""

entity_purges = Table(
    "entity_purges",
    metadata,
    _tenant_fk(),
    Column("collection", String(ID), nullable=False),
    Column("entity_id", String(LONG_ID), nullable=False),
    # The seq of the entity's latest tombstone that ``purge_tombstones`` deleted: its next change started it anew.
    Column("seq", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant_id", "collection", "entity_id"),
)
"""Where each purged entity's current life starts (``syncserver repair`` replays only the changes after ``seq``).

A row with ``collection`` and ``entity_id`` both empty (no entity has an empty id) marks the tenant's
``purged_seq`` when migration ``0013_entity_purges`` ran: purges before it were not recorded."""

verifications = Table(
    "verifications",
    metadata,
    _tenant_fk(),
    Column("started_at", BigInteger, nullable=False),
    Column("finished_at", BigInteger, nullable=False),
    Column("from_seq", BigInteger, nullable=False),
    Column("to_seq", BigInteger, nullable=False),
    Column("changes", BigInteger, nullable=False),
    Column("entities", BigInteger, nullable=False),
    Column("problems", Text, nullable=False),
    PrimaryKeyConstraint("tenant_id", "started_at"),
)
"""Results of ``syncserver verify`` runs (problems as JSON), for the admin API and page."""


@functools.cache
def latest_seq_column() -> Label[Any]:
    """A column for ``select(entities, ...)``: the seq of each entity's latest change in the log, read in the same
    statement as the row (one snapshot), by one index-only seek in ``ix_changes_tenant_entity_seq``.

    Built once (cached): constructing the correlated subquery cost more than a small push's whole merge."""
    c = changes.alias("c")
    return (
        select(c.c.seq)
        .where(
            c.c.tenant_no == entities.c.tenant_no,
            c.c.collection == entities.c.collection,
            c.c.entity_id == entities.c.entity_id,
        )
        .order_by(c.c.seq.desc())
        .limit(1)
        .scalar_subquery()
        .label("latest_seq")
    )
