"""Pricing fixtures: a small catalogue (made with the ORM models directly, since the
catalogue's own create functions are written elsewhere), trusts, a supplier, and helpers that
turn purchase lines into CSV/JSON files."""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import pytest

from marketplace.accounts.models import Organisation, OrgType, Role
from marketplace.catalog.gtin import check_digit
from marketplace.catalog.models import Category, CategoryKind, Offer, Product
from marketplace.pricing.importer import COLUMNS
from marketplace.pricing.rollups import today_utc

TODAY = today_utc()


def days_ago(n: int) -> date:
    return TODAY - timedelta(days=n)


def make_gtin(n: int) -> str:
    body = f"50{n:010d}"
    return body + str(check_digit(body))


def csv_bytes(rows: Iterable[dict[str, Any]], columns: Iterable[str] = COLUMNS) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in writer.fieldnames})
    return buffer.getvalue().encode()


def json_bytes(rows: Iterable[dict[str, Any]]) -> bytes:
    return json.dumps(list(rows), default=str).encode()


def line(po: str, n: int, *, when: date | None = None, **values: Any) -> dict[str, Any]:
    row = {
        "po_number": po,
        "line": n,
        "order_date": (when or days_ago(10)).isoformat(),
        "supplier_name": "",
        "supplier_sku": "",
        "gtin": "",
        "description": "item",
        "quantity": 1,
        "units_per_pack": "",
        "total_price_pence": 100,
    }
    row.update(values)
    return row


@dataclass
class World:
    trusts: list[Organisation]
    supplier: Organisation
    category: Category
    child_category: Category
    other_category: Category
    gloves: Product  # 100 gloves per box, GTIN-matched
    stockings: Product  # pairs, matched by supplier SKU
    spare: Product  # no GTIN, no offer
    offers: dict[str, Offer] = field(default_factory=dict)

    def trust(self, i: int) -> Organisation:
        return self.trusts[i]


@pytest.fixture
def world(factory, session_factory) -> World:
    trusts = [factory.org(OrgType.TRUST, name=f"Trust {i}", ods_code=f"RT{i}") for i in range(6)]
    supplier = factory.org(OrgType.SUPPLIER, name="Acme Medical Ltd")
    with session_factory.begin() as session:
        root = Category(
            code="33140000",
            name="Medical consumables",
            scheme="CPV",
            path="/33140000/",
            kind=CategoryKind.COMMODITY,
        )
        session.add(root)
        session.flush()
        gloves_cat = Category(
            code="18424300",
            name="Examination gloves",
            scheme="CPV",
            parent_id=root.id,
            path="/33140000/18424300/",
            kind=CategoryKind.COMMODITY,
        )
        hosiery = Category(
            code="MKT-HOSIERY",
            name="Hosiery",
            scheme="EMDN",
            path="/MKT-HOSIERY/",
            kind=CategoryKind.COMMODITY,
        )
        session.add_all([gloves_cat, hosiery])
        session.flush()
        gloves = Product(
            gtin=make_gtin(1).zfill(14),
            name="Nitrile examination gloves, medium",
            category_id=gloves_cat.id,
            units_per_pack=100,
            unit_of_measure="EA",
        )
        stockings = Product(
            gtin=make_gtin(2).zfill(14),
            name="Anti-embolism stockings, thigh, medium",
            category_id=hosiery.id,
            units_per_pack=1,
            unit_of_measure="PR",
        )
        spare = Product(name="Sterile dressing pack", category_id=root.id, units_per_pack=10)
        session.add_all([gloves, stockings, spare])
        session.flush()
        offers = {
            "gloves": Offer(
                product_id=gloves.id,
                supplier_id=supplier.id,
                supplier_sku="GLV-M",
                pack_price_pence=250,
                stock=100,
            ),
            "stockings": Offer(
                product_id=stockings.id,
                supplier_id=supplier.id,
                supplier_sku="AES-TM",
                pack_price_pence=600,
                stock=100,
            ),
        }
        session.add_all(offers.values())
        session.flush()
        for obj in (root, gloves_cat, hosiery, gloves, stockings, spare, *offers.values()):
            session.expunge(obj)
    return World(trusts, supplier, root, gloves_cat, hosiery, gloves, stockings, spare, offers)


@pytest.fixture
def buyer(factory, world):
    return factory.actor(Role.BUYER, org=world.trust(0))


@pytest.fixture
def operator(factory):
    return factory.actor(Role.OPERATOR)


@pytest.fixture
def import_as(session_factory):
    """Import rows for a trust through the service (as the operator CLI would)."""
    from marketplace.pricing import service
    from tests.support import SYSTEM

    def run(trust: Organisation, rows: Iterable[dict[str, Any]], fmt: str = "csv", **kwargs):
        data = csv_bytes(rows) if fmt == "csv" else json_bytes(rows)
        with session_factory.begin() as session:
            org = session.get(Organisation, trust.id)
            return service.import_purchases(session, SYSTEM, org, io.BytesIO(data), fmt, **kwargs)

    return run


_product_numbers = itertools.count(1000)


@pytest.fixture
def new_product(session_factory, world):
    """Makes a product in the world's child category, one unit a pack, a new GTIN each time."""

    def make() -> Product:
        n = next(_product_numbers)
        with session_factory.begin() as session:
            product = Product(
                gtin=make_gtin(n).zfill(14),
                name=f"Product {n}",
                category_id=world.child_category.id,
                units_per_pack=1,
            )
            session.add(product)
            session.flush()
            session.expunge(product)
        return product

    return make
