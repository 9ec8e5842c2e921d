"""audit events: index by object id

Revision ID: 0010_audit
Revises: 0009
Create Date: 2026-12-01 08:01:47.981421
"""

from __future__ import annotations

from alembic import op

revision = "0010_audit"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_audit_events_object_id_occurred_at", ["object_id", "occurred_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_object_id_occurred_at")
