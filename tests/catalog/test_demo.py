"""The demo catalogue: realistic, loads twice without duplicating anything."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import func, select

from marketplace.catalog.models import Category, Offer, OfferPriceHistory, Product
from marketplace.demo import load_demo


def totals(session_factory) -> dict[str, int]:
    with session_factory() as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model))
            for model in (Category, Product, Offer, OfferPriceHistory)
        }


def test_demo_catalogue_loads_twice_without_duplicates(session_factory, client):
    messages: list[str] = []
    load_demo(session_factory, progress=messages.append)
    first = totals(session_factory)
    assert 300 <= first["products"] <= 600
    assert first["offers"] > first["products"] * 2
    assert first["offer_price_history"] > first["offers"]  # some offers have earlier prices
    assert any("products" in m for m in messages)

    load_demo(session_factory)
    assert totals(session_factory) == first

    with session_factory() as session:
        by_category = Counter(
            code
            for code in session.scalars(
                select(Category.code).join(Product, Product.category_id == Category.id)
            )
        )
        for code in (
            "MKT-HOSIERY-AE",
            "MKT-HOSIERY-COMP",
            "MKT-LYMPH",
            "18424300",
            "33141110",
            "33141113",
            "33141200",
            "33141310",
            "33141320",
            "33141123",
            "33193120",
            "33193121",
            "33141720",
            "33141710",
            "33123100",
            "33195100",
            "MKT-VOICE",
            "MKT-TELECARE",
            "48180000",
        ):
            assert by_category[code] > 0, code
        competing = session.execute(
            select(
                Offer.product_id,
                func.count(),
                func.min(Offer.pack_price_pence),
                func.max(Offer.pack_price_pence),
            )
            .group_by(Offer.product_id)
            .having(func.count() >= 3)
        ).all()
        assert len(competing) >= 50
        assert any(high > low * 1.2 for _, _, low, high in competing)  # real price spreads
        excluded = session.scalars(select(Product).where(Product.benchmark_excluded)).all()
        assert excluded
        assert all(p.benchmark_excluded_reason for p in excluded)

    stockings = client.get("/api/v1/products?category=MKT-HOSIERY-AE&limit=100").get_json()["items"]
    assert stockings
    assert all(p["offer_count"] >= 1 for p in stockings)
    detail = client.get(f"/api/v1/products/{stockings[0]['id']}").get_json()
    prices = [o["unit_price_pence"] for o in detail["offers"]]
    assert prices == sorted(prices)
    app = client.get("/api/v1/products?category=48180000").get_json()["items"][0]
    assert app["assurance"]["dtac_passed"] in (True, False)
