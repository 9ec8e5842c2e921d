"""The public variance endpoints, on a small market whose figures are worked out by hand.

Gloves (100 per box), each trust buying 1,000 gloves, unit prices in pence:
RT0 2.00, RT1 2.50, RT2 3.00, RT3 3.50, RT4 6.00 (RT4 bought 200 days ago).
p10 = 2.20, p25 = 2.50, median = 3.00, p75 = 3.50, mean = 3.40, spread = 2.0, IQR/median = 1/3.
Savings against p10: RT1 300p, RT2 800p, RT3 1300p, RT4 3800p; the default minimum (1000p)
counts RT3 and RT4 only: 5100p. Outlier above 3.00 x 1.2 = 3.60: RT4.
Stockings: two trusts only (not reported at the default minimum of 3 trusts).
"""

from __future__ import annotations

import csv
import io
import random
from decimal import Decimal

import pytest
from sqlalchemy import select

from marketplace.catalog.models import Product
from marketplace.pricing import method as m
from marketplace.pricing import service
from marketplace.pricing.models import PurchaseRecord
from marketplace.pricing.rollups import Window
from marketplace.pricing.service import distribution_fields
from tests.support import SYSTEM, assert_problem

from .conftest import days_ago, line, make_gtin

GLOVE_PRICES = {0: 2000, 1: 2500, 2: 3000, 3: 3500, 4: 6000}  # pence per 10 boxes (1,000 gloves)


@pytest.fixture
def market(world, import_as):
    for i, total in GLOVE_PRICES.items():
        when = days_ago(200) if i == 4 else days_ago(5 + i)
        import_as(
            world.trust(i),
            [
                # the same product in two lines of different pack counts: volume-weighted
                line(
                    f"PO-{i}",
                    1,
                    gtin=make_gtin(1),
                    quantity=4,
                    total_price_pence=total * 4 // 10,
                    when=when,
                ),
                line(
                    f"PO-{i}",
                    2,
                    gtin=make_gtin(1),
                    quantity=6,
                    total_price_pence=total * 6 // 10,
                    when=when,
                ),
            ],
        )
    for i, total in ((0, 600), (1, 900)):
        import_as(
            world.trust(i),
            [
                line(
                    f"PO-S{i}",
                    1,
                    supplier_name="Acme Medical Ltd",
                    supplier_sku="AES-TM",
                    quantity=1,
                    total_price_pence=total,
                )
            ],
        )
    return world


def test_product_distribution_and_trust_rows(client, market):
    body = client.get(f"/api/v1/products/{market.gloves.id}/price-variance").get_json()
    assert body["reported"] is True
    assert body["reason"] is None
    assert body["product"]["name"].startswith("Nitrile")
    dist = body["distribution"]
    assert dist == {
        "n_trusts": 5,
        "min_pence": 2.0,
        "p10_pence": 2.2,
        "p25_pence": 2.5,
        "median_pence": 3.0,
        "p75_pence": 3.5,
        "max_pence": 6.0,
        "mean_pence": 3.4,
        "benchmark_pence": 2.2,
        "spread": 2.0,
        "iqr_over_median": 0.3333,
        "possible_savings_pence": 5100,
    }
    rows = body["trusts"]
    assert [r["ods_code"] for r in rows] == ["RT0", "RT1", "RT2", "RT3", "RT4"]
    assert [r["possible_savings_pence"] for r in rows] == [0, 300, 800, 1300, 3800]
    assert [r["counted_in_totals"] for r in rows] == [False, False, False, True, True]
    assert [r["outlier"] for r in rows] == [False, False, False, False, True]
    assert rows[0] == {
        "ods_code": "RT0",
        "trust_name": "Trust 0",
        "unit_price_pence": 2.0,
        "units": 1000,
        "spend_pence": 2000,
        "possible_savings_pence": 0,
        "counted_in_totals": False,
        "outlier": False,
    }


@pytest.mark.parametrize(
    ("query", "benchmark", "savings"),
    [
        ("", 2.2, 5100),
        ("benchmark=p25", 2.5, 4500),
        ("benchmark=median", 3.0, 3000),
        ("min_savings_pence=0", 2.2, 6200),
        ("benchmark=p25&min_savings_pence=0", 2.5, 5000),
    ],
)
def test_benchmark_choice_and_savings_minimum(client, market, query, benchmark, savings):
    body = client.get(f"/api/v1/products/{market.gloves.id}/price-variance?{query}").get_json()
    assert body["distribution"]["benchmark_pence"] == benchmark
    assert body["distribution"]["possible_savings_pence"] == savings
    ranking = client.get(f"/api/v1/price-variance?{query}").get_json()
    assert ranking["items"][0]["possible_savings_pence"] == savings
    assert ranking["totals"]["possible_savings_pence"] == savings


def test_outlier_threshold(client, market):
    strict = client.get(
        f"/api/v1/products/{market.gloves.id}/price-variance?outlier_threshold_percent=10"
    )
    flags = [r["outlier"] for r in strict.get_json()["trusts"]]
    assert flags == [False, False, False, True, True]  # 3.50 > 3.30
    loose = client.get(
        f"/api/v1/products/{market.gloves.id}/price-variance?outlier_threshold_percent=100"
    )
    assert not any(r["outlier"] for r in loose.get_json()["trusts"])


def test_min_trusts(client, market):
    stockings = client.get(f"/api/v1/products/{market.stockings.id}/price-variance").get_json()
    assert stockings["reported"] is False
    assert stockings["reason"] == "too_few_trusts"
    assert stockings["n_trusts"] == 2
    assert stockings["distribution"] is None
    assert stockings["trusts"] == []
    assert [i["product_id"] for i in client.get("/api/v1/price-variance").get_json()["items"]] == [
        market.gloves.id
    ]
    two = client.get(
        f"/api/v1/products/{market.stockings.id}/price-variance?min_trusts=2"
    ).get_json()
    assert two["reported"] is True
    assert two["distribution"]["spread"] == 0.5
    listed = client.get("/api/v1/price-variance?min_trusts=2").get_json()
    assert {i["product_id"] for i in listed["items"]} == {market.gloves.id, market.stockings.id}
    many = client.get(f"/api/v1/products/{market.gloves.id}/price-variance?min_trusts=6").get_json()
    assert many["reported"] is False
    assert_problem(client.get("/api/v1/price-variance?min_trusts=1"), 422)


def test_ranking_sort_category_and_pagination(client, market):
    by_savings = client.get("/api/v1/price-variance?min_trusts=2&limit=1").get_json()
    assert by_savings["totals"] == {"products": 2, "possible_savings_pence": 5100}
    assert by_savings["items"][0]["product_id"] == market.gloves.id
    second = client.get(
        f"/api/v1/price-variance?min_trusts=2&limit=1&cursor={by_savings['next_cursor']}"
    ).get_json()
    assert second["items"][0]["product_id"] == market.stockings.id
    assert second["next_cursor"] is None
    by_spread = client.get("/api/v1/price-variance?min_trusts=2&sort=spread").get_json()
    assert [i["spread"] for i in by_spread["items"]] == [2.0, 0.5]
    page = client.get("/api/v1/price-variance?min_trusts=2&sort=spread&limit=1").get_json()
    rest = client.get(
        f"/api/v1/price-variance?min_trusts=2&sort=spread&limit=1&cursor={page['next_cursor']}"
    ).get_json()
    assert rest["items"][0]["product_id"] == market.stockings.id
    root = client.get("/api/v1/price-variance?min_trusts=2&category=33140000").get_json()
    assert [i["product_id"] for i in root["items"]] == [market.gloves.id]  # gloves sit in a child
    hosiery = client.get("/api/v1/price-variance?min_trusts=2&category=MKT-HOSIERY").get_json()
    assert [i["product_id"] for i in hosiery["items"]] == [market.stockings.id]
    assert_problem(client.get("/api/v1/price-variance?category=NOPE"), 422)
    assert_problem(client.get("/api/v1/price-variance?cursor=garbage"), 422)


def _varied_market(world, import_as, new_product, seed: int, products: int = 12) -> list:
    """Products bought by one to six trusts, in a few lines each of mixed pack sizes and dates
    over the last year."""
    rng = random.Random(seed)
    made = []
    for _ in range(products):
        product = new_product()
        made.append(product)
        for i in rng.sample(range(6), rng.randint(1, 6)):
            rows = [
                line(
                    f"RK-{product.gtin}",
                    n,
                    gtin=product.gtin,
                    quantity=rng.randint(1, 40),
                    units_per_pack=rng.choice([1, 10, 100]),
                    total_price_pence=rng.randint(500, 90_000),
                    when=days_ago(rng.randint(0, 364)),
                )
                for n in range(1, rng.randint(2, 4))
            ]
            import_as(world.trust(i), rows)
    return made


def test_rankings_and_savings_computed_from_the_rollups_are_the_cached_ones(
    session_factory, world, import_as, new_product, monkeypatch
):
    """The same window and method, once from the caches and once computed (as for any other
    window or minimum), give the same ranking and the same trusts' savings, item for item."""
    _varied_market(world, import_as, new_product, seed=7)
    queries = [
        {"sort": sort, "method": m.Method(benchmark=b, min_trusts=k)}
        for sort in ("savings", "spread")
        for b in m.BENCHMARKS
        for k in (1, 3)
    ]

    def answers(session):
        for q in queries:
            yield service.variance_ranking(session, limit=100, **q)
            for i in range(6):
                ods = world.trust(i).ods_code
                yield service.trust_savings(session, ods, method=q["method"], limit=100)

    with session_factory() as session:
        cached = list(answers(session))
    monkeypatch.setattr(m.Method, "caches_cover", property(lambda self: False))
    with session_factory() as session:
        computed = list(answers(session))
    assert sum(len(page.items) for page in cached) > 20
    for one, other in zip(cached, computed, strict=True):
        assert one.items == other.items, one.method
        assert (one.total_products, one.total_possible_savings_pence) == (
            other.total_products,
            other.total_possible_savings_pence,
        ), one.method


@pytest.mark.parametrize(
    "method",
    [
        m.Method(outlier_threshold=Decimal("0.5"), min_savings_pence=0),
        m.Method(benchmark="p25", min_trusts=2, min_savings_pence=300),
        m.Method(benchmark="median", min_trusts=4, outlier_threshold=Decimal(0)),
    ],
    ids=["threshold-and-no-minimum", "p25", "median"],
)
def test_rankings_and_savings_over_another_window_are_each_products_own_variance(
    session_factory, world, import_as, new_product, method
):
    """Over another window and method, every product the ranking lists, and every saving a
    trust is shown, is what that product's own variance (its trusts analysed one by one) says;
    excluded products and other categories are left out."""
    products = _varied_market(world, import_as, new_product, seed=11, products=14)
    with session_factory.begin() as session:
        excluded = session.get(Product, products[0].id)
        excluded.benchmark_excluded = True
        excluded.benchmark_excluded_reason = "Specials: made to measure"
        service.product_changed(session, excluded.id)
    window = Window(days_ago(250), days_ago(30))
    with session_factory() as session:
        views = {
            p.id: service.product_variance(session, p.id, window=window, method=method)
            for p in products
        }
        ranking = service.variance_ranking(session, window=window, method=method, limit=100)
        elsewhere = service.variance_ranking(
            session, window=window, method=method, category_code="MKT-HOSIERY"
        )
        savings = {
            world.trust(i).ods_code: service.trust_savings(
                session, world.trust(i).ods_code, window=window, method=method, limit=100
            )
            for i in range(6)
        }
    reported = {p: v for p, v in views.items() if v.variance is not None}
    assert 3 <= len(reported) < len(products)
    assert products[0].id not in reported
    assert elsewhere.items == []
    listed = {item["product_id"]: item for item in ranking.items}
    assert set(listed) == set(reported)
    for product_id, view in reported.items():
        variance = view.variance
        expected = distribution_fields(
            variance.distribution, variance.benchmark, variance.possible_savings_pence
        )
        assert {k: listed[product_id][k] for k in expected} == expected, product_id
        assert listed[product_id]["outliers"] == variance.outliers
    assert ranking.total_possible_savings_pence == sum(
        v.variance.possible_savings_pence for v in reported.values()
    )
    for ods, page in savings.items():
        shown = {item["product_id"]: item["possible_savings_pence"] for item in page.items}
        counted = {
            product_id: row["possible_savings_pence"]
            for product_id, view in reported.items()
            for row in view.trusts
            if row["ods_code"] == ods and row["counted_in_totals"]
        }
        assert shown == counted, ods


def test_custom_window_is_summed_from_the_rollups(client, market):
    recent = client.get(
        f"/api/v1/products/{market.gloves.id}/price-variance?from={days_ago(100).isoformat()}"
    ).get_json()
    assert recent["window"]["from"] == days_ago(100).isoformat()
    assert recent["n_trusts"] == 4  # RT4 bought 200 days ago
    assert recent["distribution"]["max_pence"] == 3.5
    listed = client.get(f"/api/v1/price-variance?from={days_ago(100).isoformat()}").get_json()
    assert listed["items"][0]["n_trusts"] == 4
    old = client.get(
        f"/api/v1/products/{market.gloves.id}/price-variance?from={days_ago(210).isoformat()}&to={days_ago(190).isoformat()}"
    ).get_json()
    assert old["n_trusts"] == 1
    assert_problem(client.get(f"/api/v1/price-variance?from={days_ago(1)}&to={days_ago(5)}"), 422)


def test_trust_savings(client, market):
    body = client.get("/api/v1/trusts/RT4/savings").get_json()
    assert body["trust"] == {"ods_code": "RT4", "name": "Trust 4"}
    assert body["total_possible_savings_pence"] == 3800
    assert body["total_products"] == 1
    item = body["items"][0]
    assert item["product_id"] == market.gloves.id
    assert item["unit_price_pence"] == 6.0
    assert item["benchmark_pence"] == 2.2
    assert item["outlier"] is True
    assert item["cheapest_offer"]["offer_id"] == market.offers["gloves"].id
    assert item["cheapest_offer"]["unit_price_pence"] == 2.5
    small = client.get("/api/v1/trusts/RT1/savings").get_json()
    assert small["items"] == []
    assert small["total_possible_savings_pence"] == 0
    with_all = client.get("/api/v1/trusts/RT1/savings?min_savings_pence=0").get_json()
    assert with_all["total_possible_savings_pence"] == 300
    windowed = client.get(f"/api/v1/trusts/RT4/savings?from={days_ago(100).isoformat()}").get_json()
    assert windowed["items"] == []
    assert_problem(client.get("/api/v1/trusts/NOPE/savings"), 404)


@pytest.mark.parametrize(
    ("price", "verdict", "percentile"),
    [
        ("1.5", "below_benchmark", 0.0),
        ("2.2", "below_benchmark", 20.0),
        ("2.5", "typical", 30.0),
        ("3.2", "above_median", 60.0),
        ("4", "outlier", 80.0),
        ("6", "outlier", 90.0),
    ],
)
def test_price_check_verdicts(client, market, price, verdict, percentile):
    body = client.get(
        f"/api/v1/price-check?product={market.gloves.id}&unit_price={price}"
    ).get_json()
    assert body["verdict"] == verdict
    assert body["percentile"] == percentile
    assert body["benchmark_pence"] == 2.2
    assert body["median_pence"] == 3.0
    assert body["n_trusts"] == 5
    cheaper = body["cheaper_offer"]
    assert (cheaper is not None) == (float(price) > 2.5)


def test_price_verdict_service_and_bad_input(client, db, market):
    result = service.price_verdict(db, market.gloves.id, 4)
    assert result.verdict == "outlier"
    few = service.price_verdict(db, market.stockings.id, 7)
    assert few.verdict is None
    assert few.reason == "too_few_trusts"
    assert_problem(client.get("/api/v1/price-check?product=prd_nope&unit_price=1"), 404)
    assert_problem(client.get(f"/api/v1/price-check?product={market.gloves.id}&unit_price=-1"), 422)
    assert_problem(client.get(f"/api/v1/price-check?product={market.gloves.id}"), 422)
    assert_problem(client.get("/api/v1/products/prd_nope/price-variance"), 404)


def _csv(response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/csv"
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def test_csv_everywhere(client, market):
    ranking = _csv(client.get("/api/v1/price-variance", headers={"Accept": "text/csv"}))
    assert len(ranking) == 1
    assert ranking[0]["product_id"] == market.gloves.id
    assert ranking[0]["p10_pence"] == "2.2000"
    assert ranking[0]["possible_savings_pence"] == "5100"
    same = _csv(client.get("/api/v1/price-variance?format=csv"))
    assert same == ranking
    trusts = _csv(client.get(f"/api/v1/products/{market.gloves.id}/price-variance?format=csv"))
    assert [r["ods_code"] for r in trusts] == ["RT0", "RT1", "RT2", "RT3", "RT4"]
    assert trusts[4]["outlier"] == "true"
    assert trusts[4]["possible_savings_pence"] == "3800"
    assert trusts[0]["product_median_pence"] == "3.0000"
    savings = _csv(client.get("/api/v1/trusts/RT4/savings", headers={"Accept": "text/csv"}))
    assert savings[0]["possible_savings_pence"] == "3800"
    assert savings[0]["cheapest_offer_unit_price_pence"] == "2.5000"
    check = _csv(
        client.get(f"/api/v1/price-check?product={market.gloves.id}&unit_price=4&format=csv")
    )
    assert check[0]["verdict"] == "outlier"
    json_by_default = client.get("/api/v1/price-variance", headers={"Accept": "*/*"})
    assert json_by_default.mimetype == "application/json"


def test_a_bad_csv_request_is_a_problem_before_any_row(client, market):
    """The CSV is streamed; an unknown category is refused before it starts (not a 200 that
    breaks off), as in JSON."""
    for query in ("format=csv&category=no-such-code", "category=no-such-code"):
        body = assert_problem(client.get(f"/api/v1/price-variance?{query}"), 422)
        assert "category" in body["errors"]


def test_line_exclusion_takes_the_line_out_of_the_statistics(client, db, market, operator):
    rt4 = db.scalars(select(PurchaseRecord).where(PurchaseRecord.po_number == "PO-4")).all()
    for record in rt4:
        response = client.post(
            f"/api/v1/purchases/{record.id}/exclude",
            json={"reason": "Special order"},
            headers=operator.headers,
        )
        assert response.status_code == 200
    body = client.get(f"/api/v1/products/{market.gloves.id}/price-variance").get_json()
    assert body["n_trusts"] == 4
    assert body["distribution"]["max_pence"] == 3.5
    assert client.get("/api/v1/trusts/RT4/savings").get_json()["items"] == []
    client.post(f"/api/v1/purchases/{rt4[0].id}/include", headers=operator.headers)
    body = client.get(f"/api/v1/products/{market.gloves.id}/price-variance").get_json()
    assert body["n_trusts"] == 5


def test_product_exclusion_shows_its_reason(client, session_factory, market):
    with session_factory.begin() as session:
        product = session.get(Product, market.gloves.id)
        product.benchmark_excluded = True
        product.benchmark_excluded_reason = "Specials: made to measure"
        service.product_changed(session, product.id)
    body = client.get(f"/api/v1/products/{market.gloves.id}/price-variance").get_json()
    assert body["reported"] is False
    assert body["reason"] == "excluded_from_benchmarking"
    assert body["product"]["benchmark_excluded"] is True
    assert body["product"]["benchmark_excluded_reason"] == "Specials: made to measure"
    assert client.get("/api/v1/price-variance").get_json()["items"] == []
    assert (
        client.get(f"/api/v1/price-variance?from={days_ago(300).isoformat()}").get_json()["items"]
        == []
    )
    assert client.get("/api/v1/trusts/RT4/savings").get_json()["items"] == []
    check = client.get(f"/api/v1/price-check?product={market.gloves.id}&unit_price=4").get_json()
    assert check["verdict"] is None
    assert check["reason"] == "excluded_from_benchmarking"


def test_marketplace_purchase_is_recorded_and_counted(client, db, session_factory, market):
    with session_factory.begin() as session:
        record = service.record_marketplace_purchase(
            session,
            trust_id=market.trust(5).id,
            order_reference="ord_123",
            line=1,
            order_date=days_ago(1),
            product_id=market.gloves.id,
            supplier_id=market.supplier.id,
            quantity=10,
            total_price_pence=2600,
            actor=SYSTEM,
        )
        again = service.record_marketplace_purchase(
            session,
            trust_id=market.trust(5).id,
            order_reference="ord_123",
            line=1,
            order_date=days_ago(1),
            product_id=market.gloves.id,
            supplier_id=market.supplier.id,
            quantity=10,
            total_price_pence=2600,
        )
        assert again.id == record.id
    assert record.source.value == "marketplace"
    assert record.units_per_pack == 100
    body = client.get(f"/api/v1/products/{market.gloves.id}/price-variance").get_json()
    assert body["n_trusts"] == 6
    assert {"RT5": 2.6}.items() <= {
        r["ods_code"]: r["unit_price_pence"] for r in body["trusts"]
    }.items()


def test_a_delivered_order_is_recorded_in_one_refresh(
    client, db, session_factory, market, monkeypatch
):
    """A supplier order's lines become purchase records together: the statistics are
    refreshed once for all of them, and recording the order again changes nothing."""
    refreshes = []
    real_refresh = service.refresh
    monkeypatch.setattr(
        service, "refresh", lambda *a, **k: refreshes.append(1) or real_refresh(*a, **k)
    )
    lines = [
        service.DeliveredLine(1, market.gloves.id, 10, 2600),
        service.DeliveredLine(2, market.stockings.id, 4, 2000),
    ]

    def deliver():
        with session_factory.begin() as session:
            records = service.record_marketplace_purchases(
                session,
                trust_id=market.trust(5).id,
                order_reference="ord_456",
                order_date=days_ago(1),
                supplier_id=market.supplier.id,
                lines=lines,
            )
            return [(r.id, r.product_id, r.line) for r in records]

    first = deliver()
    assert [(p, n) for _, p, n in first] == [(market.gloves.id, 1), (market.stockings.id, 2)]
    assert refreshes == [1]
    assert deliver() == first
    assert refreshes == [1], "nothing new to refresh"
    with session_factory() as session:
        assert session.query(PurchaseRecord).filter_by(po_number="ord_456").count() == 2
    body = client.get(f"/api/v1/products/{market.gloves.id}/price-variance").get_json()
    assert "RT5" in {r["ods_code"] for r in body["trusts"]}


def test_a_delivery_with_a_bad_line_records_nothing(session_factory, market):
    from marketplace.errors import ValidationFailed

    with pytest.raises(ValidationFailed), session_factory.begin() as session:
        service.record_marketplace_purchases(
            session,
            trust_id=market.trust(5).id,
            order_reference="ord_789",
            order_date=days_ago(1),
            supplier_id=None,
            lines=[
                service.DeliveredLine(1, market.gloves.id, 10, 2600),
                service.DeliveredLine(2, market.gloves.id, 0, 2600),
            ],
        )
    with session_factory() as session:
        assert session.query(PurchaseRecord).filter_by(po_number="ord_789").count() == 0


@pytest.mark.parametrize(
    "query",
    [
        "cursor=WyJhYmMiLDVd",  # ["abc", 5]
        "from=0001-01-01",
        "to=9999-12-31",
        "from=2020-01-01&to=2030-12-31",
        "benchmark=p99",
        "min_savings_pence=1.5",
        "sort=price",
    ],
)
def test_bad_query_parameters_are_422(client, market, query):
    assert_problem(client.get(f"/api/v1/price-variance?{query}"), 422)


def test_openapi_document_is_valid(client):
    from openapi_spec_validator import validate

    spec = client.get("/api/v1/openapi.json").get_json()
    validate(spec)
    responses = spec["paths"]["/api/v1/price-variance"]["get"]["responses"]["200"]["content"]
    assert {"application/json", "text/csv"} <= set(responses)
