"""search: each bump of the search generation with the documents it changed

Revision ID: 0012_search
Revises: 0011_search
Create Date: 2026-12-01 19:00:00.000000

``search_changes`` (``marketplace/catalog/search/models.py``) lets each process bring its
in-memory columns of the search documents up to a new generation by reading only what changed.
It starts empty: a process with no columns yet loads them whole.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_search"
down_revision = "0011_search"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "search_changes",
        sa.Column("slot", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("value", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("previous", sa.BigInteger(), nullable=False),
        sa.Column("document_ids", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("slot", "value", name=op.f("pk_search_changes")),
    )
    op.create_index("ix_search_changes_created_at", "search_changes", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_search_changes_created_at", table_name="search_changes")
    op.drop_table("search_changes")
