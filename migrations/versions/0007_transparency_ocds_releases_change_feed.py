"""transparency: published OCDS releases and the public change feed (append-only)

Both tables are append-only in the database itself: triggers refuse any UPDATE or DELETE on
PostgreSQL and on SQLite.

Revision ID: 0007_transparency
Revises: 0002
Create Date: 2026-11-22 02:28:27.947675
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_transparency"
down_revision = "0002"
branch_labels = None
depends_on = None

APPEND_ONLY_TABLES = ("ocds_releases", "open_data_changes")


def upgrade() -> None:
    op.create_table(
        "ocds_releases",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("xid", sa.BigInteger(), nullable=False),
        sa.Column("release_id", sa.String(length=200), nullable=False),
        sa.Column("ocid", sa.String(length=100), nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=False),
        sa.Column("supplier_order_id", sa.String(length=40), nullable=True),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("tags", sa.String(length=200), nullable=False),
        sa.Column("refunded_pence", sa.Integer(), nullable=False),
        sa.Column("date", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_ocds_releases")),
        sa.UniqueConstraint("release_id", name=op.f("uq_ocds_releases_release_id")),
    )

    with op.batch_alter_table("ocds_releases", schema=None) as batch_op:
        batch_op.create_index("ix_ocds_releases_ocid_date", ["ocid", "date"], unique=False)
        batch_op.create_index(batch_op.f("ix_ocds_releases_order_id"), ["order_id"], unique=False)
        batch_op.create_index("ix_ocds_releases_position", ["xid", "seq"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_ocds_releases_supplier_order_id"), ["supplier_order_id"], unique=False
        )

    op.create_table(
        "open_data_changes",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("xid", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("object_type", sa.String(length=40), nullable=False),
        sa.Column("object_id", sa.String(length=200), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_open_data_changes")),
    )

    with op.batch_alter_table("open_data_changes", schema=None) as batch_op:
        batch_op.create_index("ix_open_data_changes_position", ["xid", "seq"], unique=False)
        batch_op.create_index("ix_open_data_changes_recorded_at", ["recorded_at"], unique=False)
    _create_append_only_triggers()


def downgrade() -> None:
    _drop_append_only_triggers()
    with op.batch_alter_table("open_data_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_open_data_changes_recorded_at")
        batch_op.drop_index("ix_open_data_changes_position")

    op.drop_table("open_data_changes")

    with op.batch_alter_table("ocds_releases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ocds_releases_supplier_order_id"))
        batch_op.drop_index("ix_ocds_releases_position")
        batch_op.drop_index(batch_op.f("ix_ocds_releases_order_id"))
        batch_op.drop_index("ix_ocds_releases_ocid_date")

    op.drop_table("ocds_releases")
    # ### end Alembic commands ###


def _create_append_only_triggers() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table in APPEND_ONLY_TABLES:
        message = f"{table} is append-only: published open data never changes"
        if postgresql:
            op.execute(
                f"""
                CREATE FUNCTION {table}_append_only() RETURNS trigger AS $$
                BEGIN
                    RAISE EXCEPTION '{message}' USING ERRCODE = 'restrict_violation';
                END;
                $$ LANGUAGE plpgsql
                """
            )
            op.execute(
                f"""
                CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
                FOR EACH ROW EXECUTE FUNCTION {table}_append_only()
                """
            )
        else:
            for event in ("UPDATE", "DELETE"):
                op.execute(
                    f"""
                    CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table}
                    BEGIN
                        SELECT RAISE(ABORT, '{message}');
                    END
                    """
                )


def _drop_append_only_triggers() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table in APPEND_ONLY_TABLES:
        if postgresql:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {table}_append_only()")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
