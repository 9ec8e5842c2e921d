"""Search test fixtures: a small catalogue made directly with the ORM, each change followed by
``product_changed`` in the same transaction, as the catalogue service does."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from marketplace.accounts.models import Organisation, OrgType
from marketplace.catalog import service as catalog
from marketplace.catalog.gtin import check_digit
from marketplace.catalog.models import Category, Offer, OfferStatus, Product
from marketplace.catalog.search.outbox import product_changed
from marketplace.db import utcnow


def gtin13(n: int) -> str:
    body = f"50{n:010d}"
    return body + str(check_digit(body))


@dataclass
class Catalogue:
    session_factory: object
    factory: object
    categories: dict[str, Category] = field(default_factory=dict)
    counter: int = 0
    clock: datetime = field(default_factory=lambda: utcnow() - timedelta(days=30))

    def load_categories(self) -> None:
        with self.session_factory.begin() as session:
            catalog.load_categories(session, catalog.bundled_category_rows())
            self.categories = {c.code: c for c in session.scalars(select(Category))}

    def supplier(self, name: str | None = None, *, sme: bool = False) -> Organisation:
        return self.factory.org(OrgType.SUPPLIER, name=name, is_sme=sme)

    def product(
        self,
        name: str,
        category: str,
        offers: list[tuple] = (),
        *,
        units_per_pack: int = 1,
        gtin: str | None = None,
        mpn: str | None = None,
        brand: str | None = None,
        description: str | None = None,
    ) -> str:
        """``offers``: (supplier, pack_price_pence[, stock[, status]]) tuples."""
        if not self.categories:
            self.load_categories()
        self.counter += 1
        self.clock += timedelta(minutes=1)
        with self.session_factory.begin() as session:
            product = Product(
                name=name,
                category_id=self.categories[category].id,
                units_per_pack=units_per_pack,
                gtin=gtin,
                manufacturer_part_number=mpn,
                brand=brand,
                description=description,
                created_at=self.clock,
                attributes={},
                assurance={},
            )
            session.add(product)
            session.flush()
            for spec in offers:
                supplier, price, *rest = spec
                stock = rest[0] if rest else 10
                status = rest[1] if len(rest) > 1 else OfferStatus.ACTIVE
                session.add(
                    Offer(
                        product_id=product.id,
                        supplier_id=supplier.id,
                        pack_price_pence=price,
                        stock=stock,
                        status=status,
                        price_breaks=[],
                    )
                )
            session.flush()
            product_changed(session, product.id)
            return product.id

    def update_offer(self, product_id: str, supplier: Organisation, **changes) -> None:
        with self.session_factory.begin() as session:
            offer = session.scalar(
                select(Offer).where(
                    Offer.product_id == product_id, Offer.supplier_id == supplier.id
                )
            )
            for name, value in changes.items():
                setattr(offer, name, value)
            session.flush()
            product_changed(session, product_id)

    def add_offer(
        self, product_id: str, supplier: Organisation, price: int, stock: int = 5
    ) -> None:
        with self.session_factory.begin() as session:
            session.add(
                Offer(
                    product_id=product_id,
                    supplier_id=supplier.id,
                    pack_price_pence=price,
                    stock=stock,
                    price_breaks=[],
                )
            )
            session.flush()
            product_changed(session, product_id)

    def update_product(self, product_id: str, **changes) -> None:
        with self.session_factory.begin() as session:
            product = session.get(Product, product_id)
            for name, value in changes.items():
                setattr(product, name, value)
            session.flush()
            product_changed(session, product_id)


@pytest.fixture
def cat(session_factory, factory) -> Catalogue:
    catalogue = Catalogue(session_factory, factory)
    catalogue.load_categories()
    return catalogue


def search(client, **params):
    response = client.get("/api/v1/search", query_string=params)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def names(body) -> list[str]:
    return [item["name"] for item in body["items"]]
