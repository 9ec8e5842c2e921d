"""The demo purchase history: deterministic, idempotent, the field's spreads, and nothing when
the catalogue has no commodity products."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from marketplace.accounts.models import Organisation, OrgType
from marketplace.catalog import service as catalog
from marketplace.catalog.models import Offer, Product
from marketplace.demo import DemoContext, accounts, pricing
from marketplace.pricing import service
from marketplace.pricing.models import PurchaseRecord

from .conftest import make_gtin


def _context() -> DemoContext:
    return DemoContext(progress=lambda _m: None)


def _catalogue(session) -> dict[str, str]:
    catalog.load_categories(session, catalog.bundled_category_rows())
    supplier = session.scalar(select(Organisation).where(Organisation.type == OrgType.SUPPLIER))
    made = {}
    for key, code, units, price in (
        ("gloves", "18424300", 100, 420),
        ("stockings", "MKT-HOSIERY-AE", 1, 690),
        ("dressing", "33141110", 10, 1250),
        ("wheelchair", "33193120", 1, 25000),  # a device: not a commodity, not in the history
    ):
        product = Product(
            gtin=make_gtin(len(made) + 70).zfill(14),
            name=key,
            category_id=catalog.get_category_by_code(session, code).id,
            units_per_pack=units,
        )
        session.add(product)
        session.flush()
        session.add(
            Offer(product_id=product.id, supplier_id=supplier.id, pack_price_pence=price, stock=5)
        )
        made[key] = product.id
    session.flush()
    return made


def test_demo_history_has_the_field_spreads_and_is_idempotent(session_factory):
    with session_factory.begin() as session:
        accounts.seed(session, _context())
        products = _catalogue(session)
    started = time.perf_counter()
    with session_factory.begin() as session:
        pricing.seed(session, _context())
    elapsed = time.perf_counter() - started
    with session_factory() as session:
        count = session.scalar(select(func.count()).select_from(PurchaseRecord))
        product_ids = set(session.scalars(select(PurchaseRecord.product_id).distinct()))
        sources = set(session.scalars(select(PurchaseRecord).limit(50)))
        gloves = service.product_variance(session, products["gloves"]).variance.distribution
        stockings = service.product_variance(session, products["stockings"]).variance.distribution
        dressing = service.product_variance(session, products["dressing"]).variance.distribution
    assert product_ids == {products["gloves"], products["stockings"], products["dressing"]}
    # the history stands for imported PO lines, which state their pack size
    assert {r.units_per_pack_source.value for r in sources} == {"given"}
    assert gloves.n_trusts == 20
    assert 1.0 < gloves.spread < 1.3
    assert 0.35 < stockings.spread < 0.45
    assert 0.15 < dressing.spread < 0.55
    assert elapsed < 10
    with session_factory.begin() as session:
        context = _context()
        pricing.seed(session, context)
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(PurchaseRecord)) == count
    assert any("price-variance" in command for _, command in context.examples)


def test_no_commodity_products_no_history(session_factory):
    with session_factory.begin() as session:
        accounts.seed(session, _context())
        catalog.load_categories(session, catalog.bundled_category_rows())
        pricing.seed(session, _context())
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(PurchaseRecord)) == 0
