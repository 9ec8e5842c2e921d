"""search: documents, suppliers, terms, outbox; FTS5 / tsvector + trigram indexes

Revision ID: 0003_search
Revises: 0002
Create Date: 2026-11-22 02:04:15.942253

The tables come from ``marketplace/catalog/search/models.py``. What SQLAlchemy cannot describe is
created here by hand and named ``search_fts*`` / ``ix_search_*`` so that autogenerate leaves it
alone (``migrations/env.py``): on SQLite the FTS5 table and the triggers that keep it in step with
``search_documents``; on PostgreSQL a generated, weighted ``tsvector`` column with a GIN index,
and ``pg_trgm`` with a trigram index on the word list for spelling correction. The search
tables' ordinary indexes are named ``ix_search_*`` too, so they are created here as well.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_search"
down_revision = "0002"
branch_labels = None
depends_on = None

SQLITE_FTS = [
    # External content: the text lives once, in search_documents; FTS5 keeps only the index.
    "CREATE VIRTUAL TABLE search_fts USING fts5("
    "name, keywords, category_text, description, content='search_documents', content_rowid='id', "
    "tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER search_fts_after_insert AFTER INSERT ON search_documents BEGIN "
    "INSERT INTO search_fts(rowid, name, keywords, category_text, description) "
    "VALUES (new.id, new.name, new.keywords, new.category_text, new.description); END",
    "CREATE TRIGGER search_fts_after_delete AFTER DELETE ON search_documents BEGIN "
    "INSERT INTO search_fts(search_fts, rowid, name, keywords, category_text, description) "
    "VALUES ('delete', old.id, old.name, old.keywords, old.category_text, old.description); END",
    # Only when the text changed: a price or stock change does not touch the text index.
    "CREATE TRIGGER search_fts_after_update "
    "AFTER UPDATE OF name, keywords, category_text, description ON search_documents BEGIN "
    "INSERT INTO search_fts(search_fts, rowid, name, keywords, category_text, description) "
    "VALUES ('delete', old.id, old.name, old.keywords, old.category_text, old.description); "
    "INSERT INTO search_fts(rowid, name, keywords, category_text, description) "
    "VALUES (new.id, new.name, new.keywords, new.category_text, new.description); END",
]

POSTGRES_FTS = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "ALTER TABLE search_documents ADD COLUMN search_fts_vector tsvector GENERATED ALWAYS AS ("
    "setweight(to_tsvector('english'::regconfig, coalesce(name, '')), 'A') || "
    "setweight(to_tsvector('english'::regconfig, coalesce(keywords, '')), 'B') || "
    "setweight(to_tsvector('english'::regconfig, coalesce(category_text, '')), 'C') || "
    "setweight(to_tsvector('english'::regconfig, coalesce(description, '')), 'D')) STORED",
    "CREATE INDEX ix_search_documents_fts ON search_documents USING gin (search_fts_vector)",
    "CREATE INDEX ix_search_terms_trgm ON search_terms USING gin (term gin_trgm_ops)",
]


def upgrade() -> None:
    op.create_table(
        "search_outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("product_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_outbox")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_search_outbox_pending", "search_outbox", ["processed_at", "id"])
    op.create_table(
        "search_terms",
        sa.Column("term", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("term", name=op.f("pk_search_terms")),
    )
    op.create_table(
        "search_documents",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("product_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("keywords", sa.Text(), nullable=False),
        sa.Column("category_text", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("gtin", sa.String(length=14), nullable=True),
        sa.Column("manufacturer_part_number", sa.String(length=100), nullable=True),
        sa.Column("mpn_key", sa.String(length=100), nullable=True),
        sa.Column("category_id", sa.String(length=40), nullable=False),
        sa.Column("category_path", sa.String(length=512), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "commodity",
                "device",
                "digital_tool",
                "service",
                name="category_kind",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("phb_eligible", sa.Boolean(), nullable=False),
        sa.Column("phb_excluded", sa.Boolean(), nullable=False),
        sa.Column("unit_of_measure", sa.String(length=3), nullable=False),
        sa.Column("units_per_pack", sa.Integer(), nullable=False),
        sa.Column("offer_count", sa.Integer(), nullable=False),
        sa.Column("in_stock", sa.Boolean(), nullable=False),
        sa.Column("supplier_ids", sa.Text(), nullable=False),
        sa.Column("best_offer_id", sa.String(length=40), nullable=False),
        sa.Column("best_supplier_id", sa.String(length=40), nullable=False),
        sa.Column("best_pack_price_pence", sa.Integer(), nullable=False),
        sa.Column("best_offer_in_stock", sa.Boolean(), nullable=False),
        sa.Column("max_pack_price_pence", sa.Integer(), nullable=False),
        sa.Column("min_unit_price_nanopence", sa.BigInteger(), nullable=False),
        sa.Column("max_unit_price_nanopence", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tie_break", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["category_id"],
            ["categories.id"],
            name=op.f("fk_search_documents_category_id_categories"),
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_search_documents_product_id_products")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_documents")),
        sa.UniqueConstraint("product_id", name=op.f("uq_search_documents_product_id")),
    )
    filters = [
        "category_id",
        "min_unit_price_nanopence",
        "in_stock",
        "kind",
        "phb_eligible",
        "phb_excluded",
    ]
    for name, columns in [
        ("ix_search_documents_gtin", ["gtin"]),
        ("ix_search_documents_mpn_key", ["mpn_key"]),
        ("ix_search_documents_in_stock", ["in_stock"]),
        ("ix_search_documents_tie_break", ["tie_break", *filters]),
        (
            "ix_search_documents_price",
            ["min_unit_price_nanopence", "tie_break", *[c for c in filters if "price" not in c]],
        ),
        ("ix_search_documents_newest", ["created_at", "tie_break", *filters]),
        ("ix_search_documents_facets", [*filters, "tie_break", "created_at"]),
    ]:
        op.create_index(name, "search_documents", columns)
    op.create_table(
        "search_document_suppliers",
        sa.Column(
            "document_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("supplier_id", sa.String(length=40), nullable=False),
        sa.Column("category_id", sa.String(length=40), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "commodity",
                "device",
                "digital_tool",
                "service",
                name="category_kind",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("phb_eligible", sa.Boolean(), nullable=False),
        sa.Column("phb_excluded", sa.Boolean(), nullable=False),
        sa.Column("in_stock", sa.Boolean(), nullable=False),
        sa.Column("min_unit_price_nanopence", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["search_documents.id"],
            name=op.f("fk_search_document_suppliers_document_id_search_documents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "document_id", "supplier_id", name=op.f("pk_search_document_suppliers")
        ),
    )
    op.create_index(
        "ix_search_document_suppliers_supplier",
        "search_document_suppliers",
        ["supplier_id", "document_id"],
    )
    op.create_index(
        "ix_search_document_suppliers_facets",
        "search_document_suppliers",
        [
            "category_id",
            "supplier_id",
            "min_unit_price_nanopence",
            "in_stock",
            "kind",
            "phb_eligible",
            "phb_excluded",
        ],
    )
    statements = SQLITE_FTS if op.get_bind().dialect.name == "sqlite" else POSTGRES_FTS
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("after_insert", "after_delete", "after_update"):
            op.execute(f"DROP TRIGGER IF EXISTS search_fts_{trigger}")
        op.execute("DROP TABLE IF EXISTS search_fts")
    # PostgreSQL: the GIN indexes and the generated column go with their tables; pg_trgm stays
    # (other objects may use it).
    op.drop_table("search_document_suppliers")
    op.drop_table("search_documents")
    op.drop_table("search_terms")
    op.drop_table("search_outbox")
