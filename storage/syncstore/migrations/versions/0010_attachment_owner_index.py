"""An index on the attachments that read another's stored bytes (``blob_owner``).

Revision ID: 0010_attachment_owner_index
Revises: 0009_packed_change_ids, 0004_attachments
Create Date: 2026-12-07

Written by hand to match syncstore/tables.py. ``AttachmentStore.blob_users`` counts the rows that read an
owner's objects (equal content is stored once per tenant). It used to run only when an attachment was
deleted; every upload's creation and first PATCH now ask it too (an id whose objects other attachments read
cannot name a new upload). Without the index that count read every attachment row of the tenant.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010_attachment_owner_index"
# Also after 0004_attachments, which made the table on a branch of its own: this joins the two.
down_revision: str | Sequence[str] | None = ("0009_packed_change_ids", "0004_attachments")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_attachments_tenant_blob_owner", "attachments", ["tenant_id", "blob_owner"])


def downgrade() -> None:
    op.drop_index("ix_attachments_tenant_blob_owner", table_name="attachments")
