"""Packed change ids: a change id that is a canonical UUID is stored as its 16 bytes.

Revision ID: 0009_packed_change_ids
Revises: 0008_key_dictionary
Create Date: 2026-12-07

Written by hand to match syncstore/tables.py (ADR 0039): ``changes.change_uuid``, a nullable column.
Rows already written keep their id as text and their context as it was; both read as before, and rows
written from now on are packed (``syncstore.rows``). Nothing is rewritten: a smaller row rewritten in
place leaves its page as large as it was, so converting old rows would free no disk space until a
``VACUUM``. Downgrading unpacks the rows written since (text ids, contexts in full), a page at a
time, then drops the column.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0009_packed_change_ids"
down_revision: str | Sequence[str] | None = "0008_key_dictionary"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("changes", sa.Column("change_uuid", sa.LargeBinary(), nullable=True))


PAGE = 1000
_PACKED = sa.text(
    "SELECT c.tenant_no, c.seq, c.n, c.change_id, c.change_uuid, c.context, l.name AS replica_id"
    " FROM changes c JOIN tenants t ON t.no = c.tenant_no"
    " JOIN log_names l ON l.tenant_id = t.id AND l.no = c.replica_no"
    " WHERE (c.change_uuid IS NOT NULL OR c.context LIKE '{\"\":%')"
    " AND (c.tenant_no > :tenant_no OR (c.tenant_no = :tenant_no AND c.seq > :seq))"
    " ORDER BY c.tenant_no, c.seq LIMIT :page"
)
_UNPACKED = sa.text(
    "UPDATE changes SET change_id = :change_id, change_uuid = NULL, context = :context"
    " WHERE tenant_no = :tenant_no AND seq = :seq"
)


def downgrade() -> None:
    """Unpack the rows written since (the previous release reads text ids and full contexts), then drop
    the column. Written out here rather than calling ``syncstore.rows``, so that this revision keeps
    meaning what it meant when the encoding changes again."""
    bind = op.get_bind()
    after = {"tenant_no": -1, "seq": -1}
    while rows := bind.execute(_PACKED, {**after, "page": PAGE}).all():
        bind.execute(_UNPACKED, [_unpacked(row) for row in rows])
        after = {"tenant_no": rows[-1].tenant_no, "seq": rows[-1].seq}
    op.drop_column("changes", "change_uuid")


def _unpacked(row: sa.Row[Any]) -> dict[str, object]:
    change_id = row.change_id
    if row.change_uuid is not None:
        h = bytes(row.change_uuid).hex()
        change_id = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" if row.change_id == "" else h
    context = json.loads(row.context)
    if "" in context:
        context[row.replica_id] = row.n - context.pop("")
    text = json.dumps(dict(sorted(context.items())), separators=(",", ":"))
    return {"tenant_no": row.tenant_no, "seq": row.seq, "change_id": change_id, "context": text}
