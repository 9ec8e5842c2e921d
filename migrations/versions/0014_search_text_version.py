"""search: each generation slot's value at its last text change (the shared text version)

Revision ID: 0014_search
Revises: 0013_search
Create Date: 2026-12-02 07:00:00.000000

``search_generations.text_value`` is the slot's value when a bump last changed what the
full-text index holds. The tuple of every slot's text value is the **text version**: equal in
two snapshots only if no document's text changed between them, whichever process reads it, so
processes can share a query's full-text matches filed under it. Existing slots start at their
current value (as if their last bump had changed text).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_search"
down_revision = "0013_search"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("search_generations") as batch:
        batch.add_column(
            sa.Column("text_value", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.execute("UPDATE search_generations SET text_value = value")


def downgrade() -> None:
    with op.batch_alter_table("search_generations") as batch:
        batch.drop_column("text_value")
