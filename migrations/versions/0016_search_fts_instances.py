"""search: the full-text index's postings, readable by term (SQLite)

Revision ID: 0016_search
Revises: 0015_pricing
Create Date: 2026-12-03 12:30:00.000000

``search_fts_instances`` is an ``fts5vocab`` table over ``search_fts``: one row per token
occurrence (term, document, column, offset), read by term. It stores nothing of its own. The
SQL backend computes bm25 in the process from these postings (``search/scoring.py``) instead
of asking FTS5 to rank every match. PostgreSQL: nothing to do.
"""

from __future__ import annotations

from alembic import op

revision = "0016_search"
down_revision = "0015_pricing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE search_fts_instances USING fts5vocab(search_fts, instance)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS search_fts_instances")
