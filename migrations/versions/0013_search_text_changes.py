"""search: whether each bump of the search generation changed any document's text

Revision ID: 0013_search
Revises: 0012_search
Create Date: 2026-12-01 22:00:00.000000

``search_changes.text_changed`` tells a process whether the full-text index answers as before
across a bump (a price or stock change leaves it alone), so that the matches and relevance
scores it keeps for a query stay valid. Rows written before it existed count as text changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_search"
down_revision = "0012_search"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("search_changes") as batch:
        batch.add_column(
            sa.Column("text_changed", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("search_changes") as batch:
        batch.drop_column("text_changed")
