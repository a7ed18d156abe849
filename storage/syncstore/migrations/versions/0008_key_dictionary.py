"""Key dictionaries: a data-key version may carry a compression dictionary, sealed under itself.

Revision ID: 0008_key_dictionary
Revises: 0007_compact_log
Create Date: 2026-12-07

Written by hand to match syncstore/tables.py (ADR 0034): ``tenant_keys.dictionary``, a nullable
column. Existing versions have none; nothing is rewritten. Downgrading refuses while any version
holds a dictionary, because the previous release cannot read the rows compressed against it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_key_dictionary"
down_revision: str | Sequence[str] | None = "0007_compact_log"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tenant_keys", sa.Column("dictionary", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    used = op.get_bind().execute(sa.text("SELECT count(*) FROM tenant_keys WHERE dictionary IS NOT NULL")).scalar()
    if used:
        raise RuntimeError(
            f"{used} key versions hold a compression dictionary, and rows compressed against them would not read "
            "after a downgrade"
        )
    op.drop_column("tenant_keys", "dictionary")
