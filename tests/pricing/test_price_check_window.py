"""The price check over any window (`from`/`to`), as the variance endpoints take it.

Three trusts buy the stockings twice, 300 days ago and 10 days ago, 100 pairs each time, in
pence per pair:

| trust | 300 days ago | 10 days ago | whole default window |
| --- | --- | --- | --- |
| RT0 | 4.00 | 2.00 | 3.00 |
| RT1 | 5.00 | 2.50 | 3.75 |
| RT2 | 6.00 | 3.00 | 4.50 |

A price of 5p a pair: among the old prices (p10 4.20, median 5.00) it is typical; among the
recent ones (median 2.50, outliers above 3.00) and over the default window (median 3.75,
outliers above 4.50) it is an outlier.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest

from marketplace.pricing import service
from marketplace.pricing.rollups import Window
from tests.support import assert_problem

from .conftest import TODAY, days_ago, line

OLD = (days_ago(330), days_ago(270))
RECENT = (days_ago(60), TODAY)


@pytest.fixture
def stockings(world, import_as):
    by_sku = {"supplier_name": "Acme Medical Ltd", "supplier_sku": "AES-TM", "quantity": 100}
    # pence paid for 100 pairs, 300 and 10 days ago
    for i, (old, recent) in enumerate(((400, 200), (500, 250), (600, 300))):
        rows = [
            line(f"PO-W{i}", 1, when=days_ago(300), total_price_pence=old, **by_sku),
            line(f"PO-W{i}", 2, when=days_ago(10), total_price_pence=recent, **by_sku),
        ]
        import_as(world.trust(i), rows)
    return world.stockings


def _query(product_id: str, price: str, window: tuple | None = None, extra: str = "") -> str:
    query = f"/api/v1/price-check?product={product_id}&unit_price={price}{extra}"
    if window is not None:
        query += f"&from={window[0].isoformat()}&to={window[1].isoformat()}"
    return query


def test_the_same_price_is_typical_in_one_window_and_an_outlier_in_another(client, stockings):
    old = client.get(_query(stockings.id, "5", OLD)).get_json()
    assert old["window"] == {"from": OLD[0].isoformat(), "to": OLD[1].isoformat()}
    assert old["n_trusts"] == 3
    assert old["verdict"] == "typical"
    assert old["benchmark_pence"] == 4.2
    assert old["median_pence"] == 5.0
    assert old["percentile"] == 50.0

    recent = client.get(_query(stockings.id, "5", RECENT)).get_json()
    assert recent["window"] == {"from": RECENT[0].isoformat(), "to": RECENT[1].isoformat()}
    assert recent["verdict"] == "outlier"
    assert recent["median_pence"] == 2.5
    assert recent["percentile"] == 100.0

    default = client.get(_query(stockings.id, "5")).get_json()
    assert default["window"] == {
        "from": (TODAY - timedelta(days=364)).isoformat(),
        "to": TODAY.isoformat(),
    }
    assert default["verdict"] == "outlier"
    assert default["median_pence"] == 3.75


def test_the_window_answers_as_the_product_variance_does_for_it(client, stockings):
    """The same read path as the product's variance over that window: figures agree."""
    for window in (OLD, RECENT, (days_ago(40), days_ago(5))):
        bounds = f"from={window[0].isoformat()}&to={window[1].isoformat()}"
        variance = client.get(
            f"/api/v1/products/{stockings.id}/price-variance?{bounds}&benchmark=p25"
        ).get_json()
        check = client.get(_query(stockings.id, "3", window, extra="&benchmark=p25")).get_json()
        assert check["window"] == variance["window"]
        assert check["n_trusts"] == variance["n_trusts"]
        assert check["benchmark_pence"] == variance["distribution"]["benchmark_pence"]
        assert check["median_pence"] == variance["distribution"]["median_pence"]


def test_only_from_or_only_to_default_the_other_end_as_the_variance_endpoints_do(client, stockings):
    only_to = client.get(
        _query(stockings.id, "5", extra=f"&to={days_ago(200).isoformat()}")
    ).get_json()
    assert only_to["window"] == {
        "from": (days_ago(200) - timedelta(days=364)).isoformat(),
        "to": days_ago(200).isoformat(),
    }
    assert only_to["verdict"] == "typical"  # only the purchases of 300 days ago
    only_from = client.get(
        _query(stockings.id, "5", extra=f"&from={days_ago(60).isoformat()}")
    ).get_json()
    assert only_from["window"] == {"from": days_ago(60).isoformat(), "to": TODAY.isoformat()}
    assert only_from["verdict"] == "outlier"


def test_a_window_with_too_few_trusts_gives_no_verdict(client, stockings):
    empty = client.get(_query(stockings.id, "5", (days_ago(200), days_ago(100)))).get_json()
    assert empty["n_trusts"] == 0
    assert empty["verdict"] is None
    assert empty["reason"] == "too_few_trusts"
    assert empty["window"] == {"from": days_ago(200).isoformat(), "to": days_ago(100).isoformat()}


def test_the_window_is_in_the_csv_answer(client, stockings):
    response = client.get(_query(stockings.id, "5", OLD, extra="&format=csv"))
    assert response.status_code == 200, response.get_data(as_text=True)
    (row,) = csv.DictReader(io.StringIO(response.get_data(as_text=True)))
    assert row["window_from"] == OLD[0].isoformat()
    assert row["window_to"] == OLD[1].isoformat()
    assert row["verdict"] == "typical"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (f"&from={days_ago(1).isoformat()}&to={days_ago(5).isoformat()}", "from"),
        ("&from=2020-01-01&to=2030-12-31", "from"),
        ("&from=0001-01-01", "from"),
        ("&to=9999-12-31", "to"),
        ("&from=yesterday", "from"),
    ],
)
def test_bad_windows_are_422_naming_the_field(client, stockings, query, field):
    body = assert_problem(client.get(_query(stockings.id, "5", extra=query)), 422)
    same = assert_problem(
        client.get(f"/api/v1/products/{stockings.id}/price-variance?{query[1:]}"), 422
    )
    assert list(body["errors"]) == [field]
    assert body["errors"] == same["errors"]


def test_the_service_takes_the_window(db, stockings):
    old = service.price_verdict(db, stockings.id, Decimal(5), window=Window(*OLD))
    assert old.window == Window(*OLD)
    assert old.verdict == "typical"
    assert old.median == Decimal(5)
    recent = service.price_verdict(db, stockings.id, 5, window=Window(*RECENT))
    assert recent.verdict == "outlier"
    assert recent.median == Decimal("2.5")
    basket = service.price_verdicts(
        db, [(stockings.id, 5), (stockings.id, Decimal("4.1"))], window=Window(*OLD)
    )
    assert [v.verdict for v in basket] == ["typical", "below_benchmark"]
    assert service.price_verdict(db, stockings.id, 5).window == Window.default()
