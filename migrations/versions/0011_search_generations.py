"""search: the search generation that validates the request cache

Revision ID: 0011_search
Revises: 0010_audit
Create Date: 2026-12-01 11:10:00.000000

One row per slot of the generation (``marketplace/catalog/search/cache.py``). No rows are
inserted: a slot's first bump creates its row.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_search"
down_revision = "0010_audit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "search_generations",
        sa.Column("slot", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("slot", name=op.f("pk_search_generations")),
    )


def downgrade() -> None:
    op.drop_table("search_generations")
