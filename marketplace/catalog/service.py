"""Catalogue business rules: categories, products, offers. Other domains look products and
offers up through these functions, never through the tables."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import NotFound
from .gtin import normalise_gtin
from .models import Category, CategoryKind, Offer, OfferStatus, Product


def get_product(session: Session, product_id: str) -> Product:
    product = session.get(Product, product_id)
    if product is None:
        raise NotFound(f"No product with id {product_id!r}.", code="product-not-found")
    return product


def find_product_by_gtin(session: Session, gtin: str) -> Product | None:
    return session.scalar(select(Product).where(Product.gtin == normalise_gtin(gtin)))


def get_offer(session: Session, offer_id: str) -> Offer:
    offer = session.get(Offer, offer_id)
    if offer is None:
        raise NotFound(f"No offer with id {offer_id!r}.", code="offer-not-found")
    return offer


def find_offer_by_supplier_sku(
    session: Session, supplier_id: str, supplier_sku: str
) -> Offer | None:
    return session.scalar(
        select(Offer).where(
            Offer.supplier_id == supplier_id, Offer.supplier_sku == supplier_sku.strip()
        )
    )


def get_category_by_code(session: Session, code: str) -> Category:
    category = session.scalar(select(Category).where(Category.code == code.strip()))
    if category is None:
        raise NotFound(f"No category with code {code!r}.", code="category-not-found")
    return category


def category_subtree_ids(session: Session, code: str) -> list[str]:
    """The category with this code and all its descendants."""
    category = get_category_by_code(session, code)
    return list(session.scalars(select(Category.id).where(Category.path.startswith(category.path))))


@dataclass(frozen=True)
class ProductSummary:
    """The few product facts other domains keep beside their own figures."""

    id: str
    name: str
    category_id: str
    units_per_pack: int
    benchmark_excluded: bool
    benchmark_excluded_reason: str | None


def product_summaries(session: Session, product_ids: Iterable[str]) -> dict[str, ProductSummary]:
    """Summaries of many products at once (ids that do not exist are left out)."""
    ids = list(dict.fromkeys(product_ids))
    found: dict[str, ProductSummary] = {}
    for start in range(0, len(ids), 1000):
        rows = session.execute(
            select(
                Product.id,
                Product.name,
                Product.category_id,
                Product.units_per_pack,
                Product.benchmark_excluded,
                Product.benchmark_excluded_reason,
            ).where(Product.id.in_(ids[start : start + 1000]))
        )
        for row in rows:
            found[row.id] = ProductSummary(*row)
    return found


def products_by_gtin(session: Session, gtins: Iterable[str]) -> dict[str, ProductSummary]:
    """Summaries of the products with these GTINs (normalised to 14 digits), keyed by GTIN."""
    wanted = list(dict.fromkeys(normalise_gtin(g) for g in gtins))
    found: dict[str, ProductSummary] = {}
    for start in range(0, len(wanted), 1000):
        rows = session.execute(
            select(
                Product.gtin,
                Product.id,
                Product.name,
                Product.category_id,
                Product.units_per_pack,
                Product.benchmark_excluded,
                Product.benchmark_excluded_reason,
            ).where(Product.gtin.in_(wanted[start : start + 1000]))
        )
        for gtin, *summary in rows:
            found[gtin] = ProductSummary(*summary)
    return found


def product_ids_in_category(session: Session, code: str) -> list[str]:
    """Ids of the products in a category and its descendants, in id order."""
    return list(
        session.scalars(
            select(Product.id)
            .where(Product.category_id.in_(category_subtree_ids(session, code)))
            .order_by(Product.id)
        )
    )


def cheapest_active_offer(session: Session, product_id: str) -> Offer | None:
    """The active, in-stock offer with the lowest pack price (all offers on a product share its
    units per pack, so the lowest pack price is the lowest unit price). Ties: the offer id's
    stable order, which favours no supplier by name."""
    return session.scalar(
        select(Offer)
        .where(Offer.product_id == product_id, Offer.status == OfferStatus.ACTIVE, Offer.stock > 0)
        .order_by(Offer.pack_price_pence, Offer.id)
        .limit(1)
    )


def cheapest_active_offers(session: Session, product_ids: Iterable[str]) -> dict[str, Offer]:
    """``cheapest_active_offer`` for many products in one query (products without an active,
    in-stock offer are left out)."""
    ids = list(dict.fromkeys(product_ids))
    found: dict[str, Offer] = {}
    for start in range(0, len(ids), 500):
        offers = session.scalars(
            select(Offer)
            .where(
                Offer.product_id.in_(ids[start : start + 500]),
                Offer.status == OfferStatus.ACTIVE,
                Offer.stock > 0,
            )
            .order_by(Offer.product_id, Offer.pack_price_pence, Offer.id)
        )
        for offer in offers:
            found.setdefault(offer.product_id, offer)
    return found


def load_categories(session: Session, rows: Iterable[dict[str, str]]) -> int:
    """Create or update categories from rows of ``data/categories.csv`` (parents first).
    Returns how many were created. Idempotent."""
    created = 0
    by_code = {c.code: c for c in session.scalars(select(Category))}
    for row in rows:
        parent = by_code.get(row["parent_code"]) if row["parent_code"] else None
        if row["parent_code"] and parent is None:
            raise ValueError(
                f"category {row['code']}: parent {row['parent_code']} is not defined before it"
            )
        values = {
            "name": row["name"],
            "scheme": row["scheme"],
            "scheme_code": row["scheme_code"] or None,
            "parent_id": parent.id if parent else None,
            "path": f"{parent.path if parent else '/'}{row['code']}/",
            "kind": CategoryKind(row["kind"]),
            "phb_eligible": row["phb_eligible"] == "true",
            "phb_excluded": row["phb_excluded"] == "true",
        }
        category = by_code.get(row["code"])
        if category is None:
            category = Category(code=row["code"], **values)
            session.add(category)
            created += 1
            by_code[category.code] = category
        else:
            for name, value in values.items():
                setattr(category, name, value)
    session.flush()
    return created


def bundled_category_rows() -> list[dict[str, str]]:
    with (
        resources.files("marketplace.data").joinpath("categories.csv").open(encoding="utf-8") as fh
    ):
        return list(csv.DictReader(fh))
