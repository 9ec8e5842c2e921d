"""Demo purchase history: twelve months of what the 20 demo trusts paid for the catalogue's
commodity products, with the spreads reported in the field (anti-embolism stockings about 40%
between the cheapest and dearest trust, examination gloves over 100%, other commodities
20-50%). Deterministic (seeded by product and trust), idempotent (stable PO numbers), and
fast: lines are written in bulk, then the statistics are refreshed once.

It works with whatever commodity products the catalogue holds when it runs, and creates
nothing when there are none."""

from __future__ import annotations

import hashlib
import random
from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from ..accounts import service as accounts
from ..catalog import service as catalog
from ..db import utcnow
from ..errors import NotFound
from ..pricing import rollups
from ..pricing.models import PurchaseRecord, PurchaseSource, PurchaseStatus
from . import DemoContext
from .accounts import DEMO_TRUST_CODES

COMMODITY_ROOTS = ("33140000", "MKT-HOSIERY")
GLOVES = "18424300"
AE_STOCKINGS = "MKT-HOSIERY-AE"
# max/min - 1 between the trusts' unit prices, by category (DESIGN §1).
SPREADS = {GLOVES: Decimal("1.17"), AE_STOCKINGS: Decimal("0.40")}
PER_GROUP = {GLOVES: 25, AE_STOCKINGS: 25}
OTHER_PRODUCTS = 100


def _rng(*parts: str) -> random.Random:
    digest = hashlib.sha256("|".join(parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))  # noqa: S311 (demo data)


def _subtree(session: Session, code: str) -> set[str]:
    try:
        return set(catalog.category_subtree_ids(session, code))
    except NotFound:
        return set()


def _products(session: Session) -> list[tuple[str, Decimal]]:
    """(product id, spread) for a bounded, evenly spread selection of commodity products."""
    ids: list[str] = []
    for code in COMMODITY_ROOTS:
        try:
            ids.extend(catalog.product_ids_in_category(session, code))
        except NotFound:
            continue
    if not ids:
        return []
    summaries = catalog.product_summaries(session, ids)
    groups = {code: _subtree(session, code) for code in SPREADS}
    chosen: list[tuple[str, Decimal]] = []
    others: list[str] = []
    counts = dict.fromkeys(SPREADS, 0)
    for product_id in sorted(summaries):
        category = summaries[product_id].category_id
        group = next((code for code, members in groups.items() if category in members), None)
        if group is None:
            others.append(product_id)
        elif counts[group] < PER_GROUP[group]:
            counts[group] += 1
            chosen.append((product_id, SPREADS[group]))
    step = max(1, len(others) // OTHER_PRODUCTS)
    for product_id in others[::step][:OTHER_PRODUCTS]:
        chosen.append((product_id, Decimal(20 + _rng(product_id).randrange(31)) / 100))
    return chosen


def _base_unit_price(
    session: Session, product_id: str, units_per_pack: int
) -> tuple[Decimal, str | None]:
    """Pence per unit the cheapest trust pays (the best current offer, or a made-up price), and
    the supplier of that offer."""
    offer = catalog.cheapest_active_offer(session, product_id)
    if offer is not None:
        return Decimal(offer.pack_price_pence) / units_per_pack * Decimal("0.92"), offer.supplier_id
    pack = Decimal(150 + _rng("price", product_id).randrange(5000))
    return pack / units_per_pack, None


def _months(today: date) -> list[date]:
    first = rollups.month_start(today - timedelta(days=364))
    months, month = [], first
    while month <= today:
        months.append(month)
        month = rollups.month_end(month) + timedelta(days=1)
    return months


def seed(session: Session, context: DemoContext, today: date | None = None) -> None:
    products = _products(session)
    if not products:
        context.progress("No commodity products in the catalogue: no purchase history to load.")
        return
    context.progress(f"Loading 12 months of purchases by 20 trusts for {len(products)} products…")
    today = today or rollups.today_utc()
    earliest = today - timedelta(days=364)
    trusts = [accounts.find_trust_by_ods(session, code) for code in DEMO_TRUST_CODES]
    trusts = [t for t in trusts if t is not None]
    summaries = catalog.product_summaries(session, [p for p, _ in products])
    suppliers: dict[str, str | None] = {}
    now = utcnow()
    rows = []
    for product_id, spread in products:
        product = summaries[product_id]
        base, supplier_id = _base_unit_price(session, product_id, product.units_per_pack)
        if supplier_id and supplier_id not in suppliers:
            suppliers[supplier_id] = accounts.get_organisation(session, supplier_id).name
        # each trust's price level for this product: evenly from the cheapest to base x (1 + spread)
        levels = (
            [Decimal(i) / (len(trusts) - 1) for i in range(len(trusts))]
            if len(trusts) > 1
            else [Decimal(0)]
        )
        _rng("levels", product_id).shuffle(levels)
        for trust, level in zip(trusts, levels, strict=True):
            rng = _rng(product_id, trust.ods_code or "")
            unit_price = base * (1 + spread * level)
            for month in _months(today):
                if rng.random() < 0.2:
                    continue  # not every trust orders every month
                day = month + timedelta(days=rng.randrange(28))
                packs = rng.randint(2, 40)
                if not earliest <= day <= today:
                    continue
                units = packs * product.units_per_pack
                rows.append(
                    {
                        "id": PurchaseRecord.make_id(),
                        "trust_id": trust.id,
                        "order_date": day,
                        "product_id": product_id,
                        "supplier_id": supplier_id,
                        "supplier_name": suppliers.get(supplier_id) if supplier_id else None,
                        "supplier_sku": None,
                        "gtin": None,
                        "description": product.name[:500],
                        "quantity": packs,
                        "units_per_pack": product.units_per_pack,
                        # as an import of a trust's PO lines states it
                        "given_units_per_pack": product.units_per_pack,
                        "total_price_pence": max(1, int((unit_price * units).to_integral_value())),
                        "source": PurchaseSource.IMPORT,
                        "po_number": f"DEMO-{trust.ods_code}-{month:%Y%m}-{product_id[-12:]}",
                        "line": 1,
                        "status": PurchaseStatus.MATCHED,
                        "benchmark_excluded": False,
                        "benchmark_excluded_reason": None,
                        "import_id": None,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
    table = PurchaseRecord.__table__
    dialect = session.get_bind().dialect.name
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(table).on_conflict_do_nothing(
        index_elements=["trust_id", "po_number", "line"]
    )
    for start in range(0, len(rows), 5000):
        session.execute(stmt, rows[start : start + 5000])
    context.progress("Computing price-variance statistics…")
    rollups.refresh_all(session, today=today, rebuild=True)
    gloves = next((p for p, s in products if s == SPREADS[GLOVES]), products[0][0])
    context.examples.extend(
        [
            (
                "Products ranked by possible savings across trusts",
                "curl -s {base}/api/v1/price-variance",
            ),
            (
                "Newcastle's savings opportunities (CSV)",
                "curl -s -H 'Accept: text/csv' {base}/api/v1/trusts/RTD/savings",
            ),
            (
                "What each trust paid for a product, as a chart",
                f"curl -s '{{base}}/api/v1/products/{gloves}/price-variance.svg?highlight=RTD' -o chart.svg",
            ),
            (
                "Is 5p a glove a good price?",
                f"curl -s '{{base}}/api/v1/price-check?product={gloves}&unit_price=5'",
            ),
        ]
    )
