"""Property-based checks: every statistic and the savings, computed by the service from
purchase lines in the database, against a straightforward numpy reference on the same random
data (ties, single-unit packs, mixed pack sizes for one product, trusts below the minimum).

Runs on whichever database the suite runs on (SQLite, or PostgreSQL when
MARKETPLACE_TEST_DATABASE_URL is set); example counts are modest because CI runs it twice."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from marketplace.pricing import method as m
from marketplace.pricing import service
from marketplace.pricing.models import ProductStats

from .conftest import days_ago, line

SETTINGS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

a_line = st.tuples(
    st.integers(1, 40),  # packs
    st.sampled_from([1, 1, 2, 10, 100]),  # units per pack (single-unit packs are common)
    st.sampled_from([1, 2, 3, 5, 8]),  # base price per unit (few values: ties between trusts)
    st.one_of(st.just(0), st.integers(0, 500)),  # extra pence on the line
)
a_market = st.lists(st.lists(a_line, min_size=1, max_size=4), min_size=1, max_size=6)
a_method = st.builds(
    m.Method,
    benchmark=st.sampled_from(list(m.BENCHMARKS)),
    min_trusts=st.sampled_from([1, 2, 3]),
    outlier_threshold=st.sampled_from([Decimal("0"), Decimal("0.2"), Decimal("0.5")]),
    min_savings_pence=st.sampled_from([0, 50, 1000]),
)


def _reference(market, method):
    units = np.array([sum(q * u for q, u, _, _ in lines) for lines in market], dtype=float)
    spend = np.array([sum(q * u * p + x for q, u, p, x in lines) for lines in market], dtype=float)
    prices = spend / units
    q = {"p10": 10, "p25": 25, "median": 50}[method.benchmark]
    benchmark = np.percentile(prices, q)
    median = np.percentile(prices, 50)
    savings = np.clip(spend - units * benchmark, 0, None)
    return {
        "prices": prices,
        "units": units,
        "spend": spend,
        "percentiles": np.percentile(prices, [10, 25, 50, 75]),
        "min": prices.min(),
        "max": prices.max(),
        "mean": prices.mean(),
        "spread": prices.max() / prices.min() - 1,
        "iqr_over_median": (np.percentile(prices, 75) - np.percentile(prices, 25)) / median,
        "benchmark": benchmark,
        "savings": savings,
        "outlier": prices > median * (1 + float(method.outlier_threshold)),
        "min_savings": method.min_savings_pence,
    }


def _close(a, b) -> bool:
    return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))


@SETTINGS
@given(market=a_market, method=a_method)
def test_statistics_and_savings_match_numpy(
    world, import_as, new_product, session_factory, market, method
):
    product = new_product()
    n = int(product.gtin)
    for i, lines in enumerate(market):
        rows = [
            line(
                f"H{n}",
                k + 1,
                gtin=product.gtin,
                quantity=q,
                units_per_pack=u,
                total_price_pence=q * u * p + x,
                when=days_ago(k * 20),
            )
            for k, (q, u, p, x) in enumerate(lines)
        ]
        import_as(world.trust(i), rows)
    ref = _reference(market, method)
    with session_factory() as session:
        view = service.product_variance(session, product.id, method=method)
        stats = session.scalar(select(ProductStats).where(ProductStats.product_id == product.id))

    assert view.n_trusts == len(market)
    if len(market) < method.min_trusts:
        assert view.variance is None
        assert view.reason == "too_few_trusts"
        assert view.trusts == []
        return
    variance = view.variance
    dist = variance.distribution
    for ours, theirs in zip(
        (dist.p10, dist.p25, dist.median, dist.p75), ref["percentiles"], strict=True
    ):
        assert _close(ours, theirs)
    assert _close(dist.min, ref["min"])
    assert _close(dist.max, ref["max"])
    assert _close(dist.mean, ref["mean"])
    assert _close(dist.spread, ref["spread"])
    assert _close(dist.iqr_over_median, ref["iqr_over_median"])
    assert _close(variance.benchmark, ref["benchmark"])

    # each trust's row: price, savings (whole pence), outlier flag
    order = np.lexsort((np.arange(len(market)), ref["prices"]))
    expected_prices = sorted(ref["prices"])
    assert all(
        _close(r["unit_price_pence"], p) for r, p in zip(view.trusts, expected_prices, strict=True)
    )
    by_trust = {world.trust(i).ods_code: i for i in range(len(market))}
    total = 0.0
    for row in view.trusts:
        i = by_trust[row["ods_code"]]
        saving = ref["savings"][i]
        assert abs(row["possible_savings_pence"] - saving) <= 0.5 + 1e-6
        assert row["units"] == ref["units"][i]
        assert row["spend_pence"] == ref["spend"][i]
        margin = abs(ref["prices"][i] - float(dist.median) * (1 + float(method.outlier_threshold)))
        if margin > 1e-9:
            assert row["outlier"] == bool(ref["outlier"][i])
        if abs(saving - ref["min_savings"]) > 1e-6 and saving > 1e-6:
            assert row["counted_in_totals"] == (saving >= ref["min_savings"])
        if row["counted_in_totals"]:
            total += saving
    assert abs(variance.possible_savings_pence - total) <= 0.5 + 1e-6
    assert len(order) == len(market)

    # the cached distribution (default method) agrees too
    assert stats is not None
    assert stats.n_trusts == len(market)
    assert _close(stats.p10_price, ref["percentiles"][0])
    assert _close(stats.median_price, ref["percentiles"][2])
    default = _reference(market, m.DEFAULT_METHOD)
    counted = sum(s for s in default["savings"] if s >= m.DEFAULT_MIN_SAVINGS_PENCE)
    assert abs(stats.savings_p10_pence - counted) <= 1


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.integers(1, 10_000), min_size=1, max_size=50),
    q=st.sampled_from([0, 10, 25, 50, 75, 90, 100]),
)
def test_percentile_is_numpys_linear_interpolation(values, q):
    prices = sorted(Decimal(v) / 7 for v in values)
    ours = m.percentile(prices, Decimal(q) / 100)
    assert _close(ours, np.percentile([float(p) for p in prices], q))
