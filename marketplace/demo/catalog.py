"""Demo catalogue: the category tree (CPV/EMDN-mapped), real NHS Drug Tariff Part IX products
(names, GTINs, pack sizes, tariff prices and their monthly changes) plus hand-made devices and
digital tools, and competing offers from the demo suppliers.

Everything random is drawn from a seeded generator, so every run plans the same catalogue; the
seeder looks products up by GTIN (or by the first supplier's SKU when a product has none) and
offers by (supplier, product), so a second run creates nothing.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from importlib import resources
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..accounts.models import Organisation
from ..catalog import service as catalog
from ..catalog.gtin import normalise_gtin
from ..catalog.models import Offer, OfferPriceHistory, Product
from ..db import utcnow
from . import DEMO_ACTOR, DemoContext

SEED = 20260722
TARIFF_FILE = "demo_drug_tariff_products.csv"
DEVICES_FILE = "demo_devices_and_digital.csv"

# Which demo suppliers (keys of accounts.DEMO_SUPPLIERS) sell each part of the tree.
SELLERS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("33141110", "33141113"), ("solent", "northgate", "meridian", "pennine")),
    (
        ("MKT-HOSIERY", "MKT-HOSIERY-AE", "MKT-HOSIERY-COMP", "MKT-LYMPH"),
        ("pennine", "northgate", "meridian", "solent"),
    ),
    (("18424300",), ("pennine", "northgate", "meridian")),
    (
        ("33141200", "33141240", "33141310", "33141320", "33141123"),
        ("northgate", "meridian", "pennine"),
    ),
    (
        ("33193120", "33193121", "33141720", "33141710", "33196200"),
        ("mobility", "northgate", "meridian"),
    ),
    (("33123100", "33195100"), ("brightcare", "northgate", "meridian")),
    (("MKT-VOICE", "MKT-TELECARE"), ("brightcare", "mobility")),
    (("48180000",), ("brightcare",)),
)
SKU_PREFIX = {
    "northgate": "NGM",
    "meridian": "MER",
    "pennine": "PHP",
    "solent": "SWC",
    "mobility": "MWD",
    "brightcare": "BCD",
}
# Categories where trusts buy a lot of the same thing: more competing offers, wider spreads.
POPULAR = ("MKT-HOSIERY-AE", "18424300", "33141110", "MKT-LYMPH")
DIGITAL = ("48180000",)
DEVICES = (
    "33193120",
    "33193121",
    "33141720",
    "33141710",
    "33196200",
    "33123100",
    "33195100",
    "MKT-VOICE",
    "MKT-TELECARE",
)
BENCHMARK_EXCLUSIONS = {
    "Active user rigid-frame wheelchair, made to measure": (
        "Made to measure: each chair is specified for one person, so prices are not comparable."
    ),
}


@dataclass
class PlannedOffer:
    supplier: str
    sku: str
    pack_price_pence: int
    vat_rate_percent: Decimal
    stock: int
    lead_time_days: int
    min_order_qty: int
    price_breaks: list[dict[str, int]]
    history: list[tuple[datetime, int]]  # earlier prices, oldest first


@dataclass
class PlannedProduct:
    values: dict[str, Any]
    offers: list[PlannedOffer] = field(default_factory=list)


def _rows(name: str) -> list[dict[str, str]]:
    with resources.files("marketplace.data").joinpath(name).open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _sellers(category_code: str) -> tuple[str, ...]:
    for codes, suppliers in SELLERS:
        if category_code in codes:
            return suppliers
    return ("northgate", "meridian")


def _pence(value: Decimal) -> int:
    return max(1, int(value.quantize(Decimal(1), rounding=ROUND_HALF_EVEN)))


def _month_start(month: str) -> datetime:
    year, number = month.split("-")
    return datetime(int(year), int(number), 1, 9, 0, tzinfo=UTC)


def _tariff_products() -> list[tuple[dict[str, Any], int, list[tuple[datetime, int]]]]:
    products = []
    for row in _rows(TARIFF_FILE):
        attributes = {
            "generic_name": row["generic_name"],
            "dmd_pack_code": row["dmd_pack_code"] or None,
            "bnf_code": row["bnf_code"] or None,
            "drug_tariff_price_pence": int(row["price_in_p"]),
            "pack_contents": f"{row['units_per_pack']} x {row['tariff_unit']}",
            "colour": row["colour"] or None,
            "size": row["size_or_weight"] or None,
        }
        history = [
            (_month_start(month), int(price))
            for month, price in (
                item.split(":") for item in row["price_history"].split(";") if item
            )
        ]
        values = {
            "gtin": row["gtin"] or None,
            "name": row["name"],
            "description": f"{row['generic_name']} (NHS Drug Tariff Part IX).",
            "manufacturer": row["manufacturer"] or None,
            "manufacturer_part_number": row["mpn"] or None,
            "category_code": row["category_code"],
            "unit_of_measure": row["unit_of_measure"],
            "units_per_pack": int(row["units_per_pack"]),
            "attributes": {k: v for k, v in attributes.items() if v is not None},
        }
        products.append((values, int(row["price_in_p"]), history[:-1]))
    return products


def _device_products() -> list[tuple[dict[str, Any], int, list[tuple[datetime, int]]]]:
    products = []
    for row in _rows(DEVICES_FILE):
        values = {
            "gtin": row["gtin"],
            "name": row["name"],
            "description": row["description"] or None,
            "manufacturer": row["manufacturer"],
            "brand": row["brand"],
            "manufacturer_part_number": row["mpn"],
            "category_code": row["category_code"],
            "unit_of_measure": row["unit_of_measure"],
            "units_per_pack": int(row["units_per_pack"]),
            "attributes": json.loads(row["attributes"]),
            "assurance": json.loads(row["assurance"]),
            "vat_rate_percent": Decimal(row["vat_rate_percent"]),
        }
        products.append((values, int(row["list_price_pence"]), []))
    return products


def plan_catalogue(now: datetime) -> list[PlannedProduct]:
    """The whole demo catalogue, decided by the seeded generator alone (never by the database)."""
    rng = random.Random(SEED)  # noqa: S311 (reproducible demo data, not security)
    planned = []
    for values, list_price, tariff_history in _tariff_products() + _device_products():
        code = values["category_code"]
        vat = values.pop("vat_rate_percent", Decimal(20))
        sellers = list(_sellers(code))
        rng.shuffle(sellers)
        popular = code in POPULAR or rng.random() < 0.3
        count = min(len(sellers), rng.choice((3, 4)) if popular else rng.choice((1, 1, 2, 2, 3)))
        product = PlannedProduct(values=values)
        key = values["gtin"] or values["attributes"].get("bnf_code") or values["name"][:40]
        for supplier in sellers[:count]:
            spread = (0.82, 1.32) if popular else (0.9, 1.15)
            factor = Decimal(str(round(rng.uniform(*spread), 3)))
            price = _pence(list_price * factor)
            product.offers.append(
                PlannedOffer(
                    supplier=supplier,
                    sku=f"{SKU_PREFIX[supplier]}-{key}",
                    pack_price_pence=price,
                    vat_rate_percent=vat,
                    stock=_stock(rng, code),
                    lead_time_days=_lead_time(rng, code),
                    min_order_qty=rng.choice((1, 1, 1, 1, 5, 10))
                    if code not in DEVICES + DIGITAL
                    else 1,
                    price_breaks=_breaks(rng, price)
                    if code not in DIGITAL and rng.random() < 0.2
                    else [],
                    history=_history(rng, now, factor, tariff_history, price),
                )
            )
        planned.append(product)
    return planned


def _stock(rng: random.Random, code: str) -> int:
    if code in DIGITAL:
        return 100_000  # licences
    if code in DEVICES:
        return rng.choice((0, 2, 4, 6, 8, 12, 20, 35))
    return rng.choice((0, 40, 120, 250, 600, 1200, 3000))


def _lead_time(rng: random.Random, code: str) -> int:
    if code in DIGITAL:
        return 0
    if code in DEVICES:
        return rng.choice((2, 3, 5, 7, 10, 14, 21))
    return rng.choice((1, 1, 2, 2, 3, 5))


def _breaks(rng: random.Random, price: int) -> list[dict[str, int]]:
    first = _pence(Decimal(price) * Decimal("0.95"))
    second = _pence(Decimal(price) * Decimal(str(rng.choice(("0.88", "0.9")))))
    if not second < first < price:
        return []
    return [{"min_qty": 10, "pack_price_pence": first}, {"min_qty": 50, "pack_price_pence": second}]


def _history(
    rng: random.Random,
    now: datetime,
    factor: Decimal,
    tariff_history: list[tuple[datetime, int]],
    price: int,
) -> list[tuple[datetime, int]]:
    """Earlier prices: the Drug Tariff's own monthly changes scaled by the supplier's factor, or
    for some other offers a price or two from past months."""
    if tariff_history:
        return [(when, _pence(tariff * factor)) for when, tariff in tariff_history]
    if rng.random() < 0.3:
        months = sorted(rng.sample((2, 4, 6, 9), 2), reverse=True)
        return [
            (
                now - timedelta(days=30 * m),
                _pence(Decimal(price) * Decimal(str(rng.choice(("0.94", "0.97", "1.04", "1.08"))))),
            )
            for m in months
        ]
    return []


def seed_categories(session: Session, context: DemoContext) -> None:
    context.progress("Loading the category tree…")
    catalog.load_categories(session, catalog.bundled_category_rows())


def seed_catalogue(session: Session, context: DemoContext) -> None:
    """Products and offers. Creates only what is missing, so running twice duplicates nothing."""
    now = utcnow()
    plan = plan_catalogue(now)
    suppliers: dict[str, str] = {
        key.removeprefix("supplier:"): org_id
        for key, org_id in context.objects["orgs"].items()
        if key.startswith("supplier:")
    }
    # Keep the supplier rows loaded: the session's identity map holds objects only weakly.
    organisations = [session.get(Organisation, org_id) for org_id in suppliers.values()]
    by_gtin = dict(
        session.execute(select(Product.gtin, Product.id).where(Product.gtin.is_not(None))).all()
    )
    by_sku = {
        (supplier, sku): product
        for supplier, sku, product in session.execute(
            select(Offer.supplier_id, Offer.supplier_sku, Offer.product_id).where(
                Offer.supplier_sku.is_not(None)
            )
        )
    }
    listed = set(session.execute(select(Offer.supplier_id, Offer.product_id)).all())
    context.progress(f"Loading the demo catalogue: {len(plan)} products…")
    created_products = created_offers = 0
    # Services flush what they create; skipping the autoflush before each lookup only batches
    # the price-history and audit rows, which no lookup here reads.
    with session.no_autoflush:
        for number, item in enumerate(plan, start=1):
            first = item.offers[0]
            product_id = (
                by_gtin.get(normalise_gtin(item.values["gtin"])) if item.values["gtin"] else None
            )
            product_id = product_id or by_sku.get((suppliers[first.supplier], first.sku))
            if product_id is None:
                product = catalog.create_product(
                    session, DEMO_ACTOR, supplier_id=suppliers[first.supplier], **item.values
                )
                product_id = product.id
                created_products += 1
                reason = BENCHMARK_EXCLUSIONS.get(product.name)
                if reason:
                    catalog.update_product(
                        session,
                        DEMO_ACTOR,
                        product.id,
                        {"benchmark_excluded": True, "benchmark_excluded_reason": reason},
                    )
            for planned in item.offers:
                supplier_id = suppliers[planned.supplier]
                if (supplier_id, product_id) in listed:
                    continue
                offer = catalog.create_offer(
                    session,
                    DEMO_ACTOR,
                    product_id=product_id,
                    supplier_id=supplier_id,
                    supplier_sku=planned.sku,
                    pack_price_pence=planned.pack_price_pence,
                    vat_rate_percent=planned.vat_rate_percent,
                    stock=planned.stock,
                    lead_time_days=planned.lead_time_days,
                    min_order_qty=planned.min_order_qty,
                    price_breaks=planned.price_breaks,
                )
                for when, price in planned.history:
                    session.add(
                        OfferPriceHistory(
                            offer_id=offer.id,
                            pack_price_pence=price,
                            vat_rate_percent=offer.vat_rate_percent,
                            price_breaks=[],
                            effective_from=when,
                            changed_by=DEMO_ACTOR.label,
                        )
                    )
                listed.add((supplier_id, product_id))
                created_offers += 1
            if number % 100 == 0:
                context.progress(f"  … {number}/{len(plan)} products")
    session.flush()
    del organisations
    context.progress(f"Catalogue: {created_products} products and {created_offers} offers added.")
    context.objects["catalogue"] = {"products": created_products, "offers": created_offers}
    context.examples.append(
        (
            "Anti-embolism stockings and their competing offers",
            "curl -s '{base}/api/v1/products?category=MKT-HOSIERY-AE'",
        )
    )
    context.examples.append(("The category tree", "curl -s {base}/api/v1/categories"))
