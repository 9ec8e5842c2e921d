"""Building search documents from the catalogue, and keeping ``search_documents`` current.

``build_documents`` is set-based (three queries for any number of products), so the same code
serves ``product_changed`` (one product, inside the catalogue's transaction) and a full rebuild
(``marketplace search reindex``, 1,000 products at a time).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ...db import utcnow
from ..gtin import normalise_gtin
from ..models import Category, Offer, OfferStatus, Product
from .base import tie_break, unit_price_nanopence
from .cache import bump_generation
from .models import SearchDocument, SearchDocumentSupplier, SearchTerm
from .text import mpn_key, vocabulary_words

BATCH = 1000
# PostgreSQL's postings by term (migration 0016_search; its trigger keeps them otherwise),
# written in term order so that a term's rows sit together.
REWRITE_POSTINGS = text(
    "INSERT INTO search_fts_postings (term, document_id, places) SELECT u.lexeme, d.id, "
    "ARRAY(SELECT (CASE x.w WHEN 'A' THEN 0 WHEN 'B' THEN 1 WHEN 'C' THEN 2 ELSE 3 END) << 24 "
    "| x.p FROM unnest(u.positions, u.weights) AS x(p, w)) "
    "FROM search_documents d CROSS JOIN LATERAL unnest(d.search_fts_vector) AS u "
    "ORDER BY u.lexeme, d.id"
)
# The columns the full-text index holds (SQLite's search_fts, PostgreSQL's search_fts_vector).
TEXT_COLUMNS = frozenset({"name", "keywords", "category_text", "description"})


def _category_trail(session: Session, paths: Iterable[str]) -> dict[str, tuple[str, str]]:
    """code -> (name, kind) for every category on the given materialised paths."""
    codes = {code for path in paths for code in path.strip("/").split("/") if code}
    if not codes:
        return {}
    rows = session.execute(select(Category.code, Category.name).where(Category.code.in_(codes)))
    return {code: name for code, name in rows}


def _attribute_text(attributes: Any) -> str:
    if not isinstance(attributes, dict):
        return ""
    return " ".join(
        str(v) for v in attributes.values() if isinstance(v, str | int) and not isinstance(v, bool)
    )


def build_documents(session: Session, product_ids: list[str]) -> dict[str, dict[str, Any] | None]:
    """The document (column values) for each product id; None when it is not searchable (no
    such product, or no active offer)."""
    docs: dict[str, dict[str, Any] | None] = dict.fromkeys(product_ids)
    if not product_ids:
        return docs
    products = session.execute(
        select(
            Product.id,
            Product.name,
            Product.description,
            Product.brand,
            Product.manufacturer,
            Product.manufacturer_part_number,
            Product.gtin,
            Product.attributes,
            Product.unit_of_measure,
            Product.units_per_pack,
            Product.created_at,
            Category.id.label("category_id"),
            Category.path,
            Category.kind,
            Category.phb_eligible,
            Category.phb_excluded,
        )
        .join(Category, Category.id == Product.category_id)
        .where(Product.id.in_(product_ids))
    ).all()
    offers: dict[str, list[Any]] = defaultdict(list)
    for offer in session.execute(
        select(
            Offer.product_id, Offer.id, Offer.supplier_id, Offer.pack_price_pence, Offer.stock
        ).where(Offer.product_id.in_(product_ids), Offer.status == OfferStatus.ACTIVE)
    ):
        offers[offer.product_id].append(offer)
    trail = _category_trail(session, (p.path for p in products))
    for p in products:
        active = offers.get(p.id)
        if not active:
            continue
        # The best offer: lowest pack price (all offers on a product share its units per pack,
        # so that is the lowest unit price); at equal price an in-stock offer, then a stable
        # hash of the offer id, never the supplier's name.
        best = min(active, key=lambda o: (o.pack_price_pence, o.stock <= 0, tie_break(o.id)))
        highest = max(o.pack_price_pence for o in active)
        supplier_ids = sorted({o.supplier_id for o in active})
        category_names = [trail.get(code, "") for code in p.path.strip("/").split("/")]
        docs[p.id] = {
            "product_id": p.id,
            "name": p.name,
            "keywords": " ".join(
                x
                for x in (
                    p.brand,
                    p.manufacturer,
                    p.manufacturer_part_number,
                    _attribute_text(p.attributes),
                )
                if x
            ),
            "category_text": " ".join(n for n in category_names if n),
            "description": p.description or "",
            "gtin": normalise_gtin(p.gtin) if p.gtin else None,
            "manufacturer_part_number": p.manufacturer_part_number,
            "mpn_key": mpn_key(p.manufacturer_part_number),
            "category_id": p.category_id,
            "category_path": p.path,
            "kind": p.kind,
            "phb_eligible": p.phb_eligible,
            "phb_excluded": p.phb_excluded,
            "unit_of_measure": p.unit_of_measure,
            "units_per_pack": p.units_per_pack,
            "offer_count": len(active),
            "in_stock": any(o.stock > 0 for o in active),
            "supplier_ids": " ".join(supplier_ids),
            "best_offer_id": best.id,
            "best_supplier_id": best.supplier_id,
            "best_pack_price_pence": best.pack_price_pence,
            "best_offer_in_stock": best.stock > 0,
            "max_pack_price_pence": highest,
            "min_unit_price_nanopence": unit_price_nanopence(
                best.pack_price_pence, p.units_per_pack
            ),
            "max_unit_price_nanopence": unit_price_nanopence(highest, p.units_per_pack),
            "created_at": p.created_at,
            "tie_break": tie_break(p.id),
        }
    return docs


_COPIED = [
    c.key
    for c in SearchDocumentSupplier.__table__.columns
    if c.key not in ("document_id", "supplier_id")
]


def supplier_rows(document_id: int, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The document's rows in ``search_document_suppliers``."""
    copied = {c: doc[c] for c in _COPIED}
    return [
        {"document_id": document_id, "supplier_id": s, **copied}
        for s in doc["supplier_ids"].split()
    ]


def _supplier_key(row: dict[str, Any]) -> str:
    return row["supplier_id"]


def document_words(doc: dict[str, Any]) -> set[str]:
    return vocabulary_words(doc["name"], doc["keywords"], doc["category_text"], doc["description"])


def document_id(session: Session, product_id: str, taken: set[int] | None = None) -> int:
    """A new document's id: the product id's tie-break hash, or the next free number in the
    astronomically rare case that another product's hash is the same. With ``taken`` (a full
    rebuild into an empty table) the ids in use are those in ``taken``."""
    candidate = tie_break(product_id)

    def in_use(n: int) -> bool:
        return n in taken if taken is not None else session.get(SearchDocument, n) is not None

    while in_use(candidate):
        candidate = (candidate + 1) % 2**63
    return candidate


def _insert_ignore(session: Session, table: Any, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    session.execute(module.insert(table).on_conflict_do_nothing(), rows)


def add_terms(session: Session, terms: Iterable[str]) -> bool:
    """Add the words the word list lacks; True when there was any (the spelling corrections
    may then differ, as after a text change)."""
    wanted = sorted(set(terms))
    known: set[str] = set()
    for start in range(0, len(wanted), BATCH):
        chunk = wanted[start : start + BATCH]
        known.update(session.scalars(select(SearchTerm.term).where(SearchTerm.term.in_(chunk))))
    new = [t for t in wanted if t not in known]
    _insert_ignore(session, SearchTerm.__table__, [{"term": t} for t in new])
    return bool(new)


def refresh_documents(session: Session, product_ids: list[str]) -> None:
    """Bring the search documents of these products up to date (insert, update or delete),
    and bump the search generation if any of them really changed."""
    ids = list(dict.fromkeys(product_ids))
    docs = build_documents(session, ids)
    existing = {
        d.product_id: d
        for d in session.scalars(select(SearchDocument).where(SearchDocument.product_id.in_(ids)))
    }
    terms: set[str] = set()
    changed: set[int] = set()  # ids of the documents that really changed
    text_changed = False  # whether the full-text index changed with them
    for product_id, values in docs.items():
        current = existing.get(product_id)
        if values is None:
            if current is not None:
                session.execute(
                    delete(SearchDocumentSupplier).where(
                        SearchDocumentSupplier.document_id == current.id
                    )
                )
                session.delete(current)
                changed.add(current.id)
                text_changed = True
            continue
        if current is None:
            current = SearchDocument(id=document_id(session, product_id), **values)
            session.add(current)
            changed.add(current.id)
            text_changed = True
        else:
            # Only changed columns are written, so a price change leaves the text index alone.
            for name, value in values.items():
                if getattr(current, name) != value:
                    setattr(current, name, value)
                    changed.add(current.id)
                    text_changed = text_changed or name in TEXT_COLUMNS
        session.flush()
        rows = supplier_rows(current.id, values)
        table = SearchDocumentSupplier.__table__
        have = [
            dict(r._mapping)
            for r in session.execute(select(table).where(table.c.document_id == current.id))
        ]
        if sorted(have, key=_supplier_key) != sorted(rows, key=_supplier_key):
            session.execute(
                delete(SearchDocumentSupplier).where(
                    SearchDocumentSupplier.document_id == current.id
                )
            )
            session.execute(insert(SearchDocumentSupplier), rows)
            changed.add(current.id)
        terms |= document_words(values)
    words_added = add_terms(session, terms)
    if changed or words_added:
        bump_generation(session, changed, text_changed or words_added)
    session.flush()


def _product_id_batches(session: Session, size: int) -> Iterator[list[str]]:
    after = ""
    while True:
        batch = list(
            session.scalars(
                select(Product.id).where(Product.id > after).order_by(Product.id).limit(size)
            )
        )
        if not batch:
            return
        yield batch
        after = batch[-1]


def rebuild_all(
    session: Session, progress: Callable[[int], None] = lambda _n: None, batch_size: int = BATCH
) -> int:
    """Rebuild every search document (and the word list) in the caller's transaction; readers
    keep seeing the old documents until it commits. Calls ``progress(n)`` per batch of products
    done. Returns the number of searchable products."""
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:  # the postings are rewritten once at the end, in term order
        session.execute(select(func.set_config("marketplace.search_postings", "deferred", True)))
    session.execute(delete(SearchDocumentSupplier))
    session.execute(delete(SearchDocument))
    session.execute(delete(SearchTerm))
    now = utcnow()
    searchable = 0
    taken: set[int] = set()
    for batch in _product_id_batches(session, batch_size):
        docs = [d for d in build_documents(session, batch).values() if d is not None]
        if docs:
            for doc in docs:
                doc["updated_at"] = now
                doc["id"] = document_id(session, doc["product_id"], taken)
                taken.add(doc["id"])
            session.execute(insert(SearchDocument), docs)
            session.execute(
                insert(SearchDocumentSupplier),
                [row for d in docs for row in supplier_rows(d["id"], d)],
            )
            add_terms(session, {w for d in docs for w in document_words(d)})
            searchable += len(docs)
        progress(len(batch))
    if postgres:
        # Writers wait until the rebuild commits, so that none adds postings between the two
        # statements (the rebuild already holds every document's row lock).
        session.execute(text("LOCK TABLE search_documents IN SHARE MODE"))
        session.execute(text("DELETE FROM search_fts_postings"))
        session.execute(REWRITE_POSTINGS)
        session.execute(select(func.set_config("marketplace.search_postings", "", True)))
    bump_generation(session, None)
    session.flush()
    return searchable


def count_products(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Product)) or 0
