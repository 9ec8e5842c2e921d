"""Catalogue business rules: categories, products, offers. Other domains look products and
offers up through these functions, never through the tables."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import NotFound
from .gtin import normalise_gtin
from .models import Category, Offer, Product


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
