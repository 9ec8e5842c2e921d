"""pricing: the pack size each purchase line gave, apart from the one it took from the catalogue

Revision ID: 0015_pricing
Revises: 0014_search
Create Date: 2026-12-03 09:00:00.000000

``purchase_records.given_units_per_pack`` is the pack size the line itself gave (the trust's
file, or the marketplace order it was delivered on); it is null when the line gave none, and
``units_per_pack`` is then the matched product's, so that a re-match to another product takes
that product's pack size instead of keeping the first one's. A check keeps it equal to
``units_per_pack`` whenever it is set.

Backfill: where an existing line's pack size came from cannot be known (a file's, or filled in
by a match), so every existing line with a pack size counts as having given it
(``given_units_per_pack = units_per_pack``): nothing changes for them, a re-match keeps their
pack size as before. Unmatched lines without one stay null (their file gave none).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_pricing"
down_revision = "0014_search"
branch_labels = None
depends_on = None

CHECK = "given_units_per_pack_kept"


def upgrade() -> None:
    with op.batch_alter_table("purchase_records") as batch:
        batch.add_column(sa.Column("given_units_per_pack", sa.Integer(), nullable=True))
    op.execute("UPDATE purchase_records SET given_units_per_pack = units_per_pack")
    with op.batch_alter_table("purchase_records") as batch:
        batch.create_check_constraint(
            op.f(f"ck_purchase_records_{CHECK}"),
            "given_units_per_pack IS NULL "
            "OR (units_per_pack IS NOT NULL AND units_per_pack = given_units_per_pack)",
        )


def downgrade() -> None:
    with op.batch_alter_table("purchase_records") as batch:
        batch.drop_constraint(op.f(f"ck_purchase_records_{CHECK}"), type_="check")
        batch.drop_column("given_units_per_pack")
