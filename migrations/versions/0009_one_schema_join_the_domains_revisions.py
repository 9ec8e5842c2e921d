"""one schema: join the domains' revisions

Revision ID: 0009
Revises: 0003_budgets, 0003_pricing, 0003_search, 0007_transparency, 0008_orders
Create Date: 2026-11-22 03:13:26.777740
"""

from __future__ import annotations

revision = "0009"
down_revision = ("0003_budgets", "0003_pricing", "0003_search", "0007_transparency", "0008_orders")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
