"""Search tables: one denormalised document per searchable product, its suppliers, the word list
for spelling correction, the search generation, and the outbox that feeds Elasticsearch.

The full-text indexes themselves (SQLite FTS5 ``search_fts``, PostgreSQL ``search_fts_vector`` +
GIN, the trigram index on ``search_terms``) are created by hand in the migration: SQLAlchemy
cannot describe them, and their ``search_fts``/``ix_search_`` names keep autogenerate away.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, true
from sqlalchemy.orm import Mapped, mapped_column

from ...accounts.models import enum_column
from ...db import Base, utcnow
from ..models import CategoryKind

FILTER_COLUMNS = (
    "category_id",
    "min_unit_price_nanopence",
    "in_stock",
    "kind",
    "phb_eligible",
    "phb_excluded",
)


class SearchDocument(Base):
    """Everything search needs about one product, refreshed by ``product_changed`` in the same
    transaction as the change. Only products with at least one active offer have a row.

    Unit prices are integers in billionths of a penny (``*_nanopence``), so filtering and sorting
    compare exact integers on both databases; the API shows them from the pack prices, which
    are exact pence."""

    __tablename__ = "search_documents"
    __table_args__ = (
        # Each sort order has an index that also holds the filter columns, so a page is found
        # by walking one index (and a facet count by scanning one) without reading the rows.
        Index("ix_search_documents_tie_break", "tie_break", *FILTER_COLUMNS),
        Index(
            "ix_search_documents_price",
            "min_unit_price_nanopence",
            "tie_break",
            *[c for c in FILTER_COLUMNS if c != "min_unit_price_nanopence"],
        ),
        Index("ix_search_documents_newest", "created_at", "tie_break", *FILTER_COLUMNS),
        Index("ix_search_documents_facets", *FILTER_COLUMNS, "tie_break", "created_at"),
    )

    # The tie-break hash of the product id (``documents.document_id``): an integer key for
    # SQLite FTS5 (its rowid), and the order in which equally relevant products are listed, so
    # a text page is ranked from the full-text index alone.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"), unique=True)
    # Searchable text, in four weighted fields.
    name: Mapped[str] = mapped_column(String(300))
    keywords: Mapped[str] = mapped_column(Text)  # brand, manufacturer, part number, attributes
    category_text: Mapped[str] = mapped_column(Text)  # category names, root to leaf
    description: Mapped[str] = mapped_column(Text)
    # Exact identifiers.
    gtin: Mapped[str | None] = mapped_column(String(14), index=True)
    manufacturer_part_number: Mapped[str | None] = mapped_column(String(100))
    mpn_key: Mapped[str | None] = mapped_column(String(100), index=True)
    # Category and what it implies.
    category_id: Mapped[str] = mapped_column(ForeignKey("categories.id"))
    category_path: Mapped[str] = mapped_column(String(512))
    kind: Mapped[CategoryKind] = mapped_column(enum_column(CategoryKind, "category_kind"))
    phb_eligible: Mapped[bool] = mapped_column(Boolean)
    phb_excluded: Mapped[bool] = mapped_column(Boolean)
    unit_of_measure: Mapped[str] = mapped_column(String(3))
    units_per_pack: Mapped[int] = mapped_column(Integer)
    # Offers, aggregated over the active ones.
    offer_count: Mapped[int] = mapped_column(Integer)
    in_stock: Mapped[bool] = mapped_column(Boolean, index=True)
    supplier_ids: Mapped[str] = mapped_column(Text)  # space-separated, sorted
    best_offer_id: Mapped[str] = mapped_column(String(40))
    best_supplier_id: Mapped[str] = mapped_column(String(40))
    best_pack_price_pence: Mapped[int] = mapped_column(Integer)
    best_offer_in_stock: Mapped[bool] = mapped_column(Boolean)
    max_pack_price_pence: Mapped[int] = mapped_column(Integer)
    min_unit_price_nanopence: Mapped[int] = mapped_column(BigInteger)  # = the best offer's
    max_unit_price_nanopence: Mapped[int] = mapped_column(BigInteger)
    # Ordering.
    created_at: Mapped[datetime]  # the product's
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    tie_break: Mapped[int] = mapped_column(BigInteger)


class SearchDocumentSupplier(Base):
    """One row per (document, supplier with an active offer on it): the supplier filter of a
    ranked page, and each supplier's documents for the in-memory columns (``columns.py``). The
    document's filter columns repeated here served facet counting in the database, before the
    columns took it over; nothing reads them now."""

    __tablename__ = "search_document_suppliers"
    __table_args__ = (
        Index("ix_search_document_suppliers_supplier", "supplier_id", "document_id"),
        Index(
            "ix_search_document_suppliers_facets",
            "category_id",
            "supplier_id",
            "min_unit_price_nanopence",
            "in_stock",
            "kind",
            "phb_eligible",
            "phb_excluded",
        ),
    )

    document_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("search_documents.id", ondelete="CASCADE"),
        primary_key=True,
    )
    supplier_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    category_id: Mapped[str] = mapped_column(String(40))
    kind: Mapped[CategoryKind] = mapped_column(enum_column(CategoryKind, "category_kind"))
    phb_eligible: Mapped[bool] = mapped_column(Boolean)
    phb_excluded: Mapped[bool] = mapped_column(Boolean)
    in_stock: Mapped[bool] = mapped_column(Boolean)
    min_unit_price_nanopence: Mapped[int] = mapped_column(BigInteger)


class SearchTerm(Base):
    """Every word (4+ letters) seen in searchable text: the dictionary that query words are
    spell-corrected against. It only grows between rebuilds (``marketplace search reindex``
    starts it afresh); a stale word costs nothing but a correction that finds nothing."""

    __tablename__ = "search_terms"

    term: Mapped[str] = mapped_column(String(64), primary_key=True)


class SearchGeneration(Base):
    """One slot of the search generation (``cache.py``): bumped in the same transaction as
    every real change to a search document, read by every search to validate its cache."""

    __tablename__ = "search_generations"

    slot: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(BigInteger)
    # the value when a bump of this slot last changed a document's text (the text version)
    text_value: Mapped[int] = mapped_column(BigInteger, server_default="0")


class SearchChange(Base):
    """One bump of one generation slot (``cache.py``): the slot's value before and after, and
    the documents that the bumping transaction changed (space-separated ids; NULL when it may
    have changed any, as a full rebuild does), and whether it changed what the full-text index
    holds (a document added or removed, or its text edited; not a price or stock change). A
    process holding the documents' columns at one generation reads the changes since
    (``columns.py``) instead of every document again, and keeps the matches it found for a
    query while no text changed (``sql.py``).

    A slot's bumps form a chain: writers bumping the same slot wait for each other's row lock,
    so in commit order each one starts from the value the last one left. A reader follows the
    chain from the value it holds to the value it sees, and reloads everything when a link is
    missing (rows older than ``CHANGES_KEPT`` are pruned)."""

    __tablename__ = "search_changes"
    __table_args__ = (Index("ix_search_changes_created_at", "created_at"),)

    slot: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    previous: Mapped[int] = mapped_column(BigInteger)
    document_ids: Mapped[str | None] = mapped_column(Text)
    text_changed: Mapped[bool] = mapped_column(Boolean, server_default=true())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SearchOutbox(Base):
    """Transactional outbox for Elasticsearch: ``product_changed`` adds a row in the same
    transaction as the catalogue change; ``marketplace search sync`` (and the after-request hook)
    index the product's current document and mark the row processed. Processed rows are kept
    for a while so that a reindex can replay what changed while it was copying. The id is the
    Elasticsearch external version of the change, so it must never be reused (AUTOINCREMENT on
    SQLite)."""

    __tablename__ = "search_outbox"
    __table_args__ = (
        Index("ix_search_outbox_pending", "processed_at", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    product_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(500))
