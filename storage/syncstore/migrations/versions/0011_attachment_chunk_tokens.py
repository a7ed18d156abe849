"""Each PATCH of an upload writes its objects under a token of its own; the row records which.

Revision ID: 0011_attachment_chunk_tokens
Revises: 0010_attachment_owner_index
Create Date: 2026-12-07

Written by hand to match syncstore/tables.py. Two PATCHes of one upload racing on two server processes wrote
the same object keys, so the stored bytes could differ from the ones the winning PATCH hashed and verified.
Objects are now named with the writing PATCH's token, and ``attachments.chunk_tokens`` (segments
``"<first index>:<token>,…"``) names them, moved by the same compare-and-set as the offset. Existing rows keep
``NULL``: their objects are named as before, and are read as before. Nothing is rewritten. A downgrade is
refused while any row has tokens (the previous release would not find its objects).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_attachment_chunk_tokens"
down_revision: str | Sequence[str] | None = "0010_attachment_owner_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("attachments", sa.Column("chunk_tokens", sa.Text(), nullable=True))


def downgrade() -> None:
    used = op.get_bind().execute(sa.text("SELECT count(*) FROM attachments WHERE chunk_tokens IS NOT NULL")).scalar()
    if used:
        raise RuntimeError(
            f"{used} attachments name their objects with PATCH tokens, which the previous release cannot read; "
            "rotate the tenants' keys and run `syncserver keys reencrypt` (re-encrypted attachments have none), "
            "and finish or terminate uploads in progress, before downgrading"
        )
    op.drop_column("attachments", "chunk_tokens")
