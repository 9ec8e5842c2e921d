"""The batched summary the refreshes cache (``summarise_many``) against the method's plain
per-trust computation (``analyse``), figure for figure: the batch decides outliers and counted
savings in floating point first, so these cases sit exactly on the lines it must not misjudge."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketplace.pricing import method as m


def _expected(units: list[int], spends: list[int], method: m.Method) -> m.Summary:
    totals = [
        m.TrustTotal(f"T{i}", u, s) for i, (u, s) in enumerate(zip(units, spends, strict=True))
    ]
    analysed = {name: m.analyse(totals, method.with_benchmark(name)) for name in m.BENCHMARKS}
    default = analysed[method.benchmark]
    return m.Summary(
        distribution=default.distribution,
        units=default.units,
        spend_pence=default.spend_pence,
        outliers=default.outliers,
        savings_pence={name: round(v.savings) for name, v in analysed.items()},
    )


# Near 2**31 (the batch's integer fast path ends there) float64 rounds different prices alike.
EDGE = [2**31 - 3, 2**31 - 2, 2**31 - 1, 2**31]
a_trust = st.tuples(
    st.one_of(st.sampled_from([1, 2, 3, 10, 100, 7_000_000]), st.sampled_from(EDGE)),  # units
    st.one_of(
        st.sampled_from([1, 100, 1000, 1100, 2000, 10**10]),  # spends that tie and sit on lines
        st.integers(1, 10**7),
        st.integers(2**53, 2**60),  # beyond float64's exact integers
        st.sampled_from(EDGE),
    ),
)
a_product = st.lists(a_trust, min_size=1, max_size=12)
a_method = st.builds(
    m.Method,
    min_savings_pence=st.sampled_from([0, 1, 1000]),
    outlier_threshold=st.sampled_from([Decimal(0), Decimal("0.2"), Decimal("0.5")]),
)


@settings(max_examples=300, deadline=None)
@given(products=st.lists(a_product, min_size=1, max_size=6), method=a_method)
def test_batch_matches_the_per_trust_method(products, method):
    columns = [([u for u, _ in p], [s for _, s in p]) for p in products]
    assert m.summarise_many(columns, method) == [_expected(u, s, method) for u, s in columns]


def test_savings_exactly_at_the_minimum_count_and_a_penny_less_do_not():
    # eleven trusts: p10 is the second price, 8.3p a unit, which float64 cannot hold exactly
    units = [10, 10, *[100] * 9]
    spends = [80, 83, 900, 950, 1000, 1100, 1200, 1300, 1400, 1829, 1830]
    summary = m.summarise_columns(units, spends)
    assert summary.distribution.p10 == Decimal("8.3")
    # 1830 - 100 x 8.3 is exactly 1000p (float64 makes it 999.99999999999989): it counts;
    # 1829 saves 999p and the others less: they do not
    assert summary.savings_pence["p10"] == 1000
    assert summary == _expected(units, spends, m.DEFAULT_METHOD)


def test_prices_on_the_outlier_line_are_not_outliers_and_a_hair_above_are():
    # median 10p, so the line is 12p: 1200/100 sits on it; the sixth price is above it by
    # 1e-17p, which float64 cannot tell from 12
    units = [100, 100, 100, 100, 100, 10**17, 100]
    spends = [800, 900, 1000, 1000, 1200, 12 * 10**17 + 1, 1201]
    summary = m.summarise_columns(units, spends)
    assert summary.outliers == 2
    assert summary == _expected(units, spends, m.DEFAULT_METHOD)


def test_pairs_without_units_are_left_out_and_a_product_without_any_is_refused():
    summary = m.summarise_many([([0, 10, 20], [0, 100, 400])])[0]
    assert summary.distribution.n_trusts == 2
    assert summary.units == 30
    with pytest.raises(ValueError, match="no purchases"):
        m.summarise_many([([10], [100]), ([0], [0])])
    assert m.summarise_many([]) == []


def _rounded(value: Fraction) -> Decimal:
    return Decimal(value.numerator) / Decimal(value.denominator)


def test_prices_float64_rounds_alike_are_still_ordered_exactly():
    # 2147483647/2147483646 and 2147483646/2147483645 differ by 2e-19: one float64
    units = [2147483645, 2147483646, 2147483646, 1, 1]
    spends = [2147483646, 2147483647, 2147483647, 3, 5]
    assert spends[0] / units[0] == spends[1] / units[1]
    summary = m.summarise_columns(units, spends)
    assert summary.distribution.min == Decimal(2147483647) / Decimal(2147483646)
    assert summary.distribution.p25 == Decimal(2147483647) / Decimal(2147483646)
    assert summary == _expected(units, spends, m.DEFAULT_METHOD)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1)), min_size=1, max_size=40
    )
)
def test_the_mean_is_the_exact_mean_rounded_once(pairs):
    units, spends = [u for u, _ in pairs], [s for _, s in pairs]
    exact = _rounded(sum(map(Fraction, spends, units), Fraction(0)) / len(pairs))
    assert m.exact_mean(spends, units) == exact
    assert m.summarise_columns(units, spends).distribution.mean == exact


def test_a_mean_too_close_to_call_from_its_bounds_is_computed_in_fractions(monkeypatch):
    # 1.000…001 (28 digits) plus just under half its last place: the bounds round either way
    lower = 10**36 + 10**9 + 5 * 10**8 - 1
    assert m._mean_between(lower, 1) is None
    assert m._mean_between(10**36 + 10**9, 1) == Decimal("1.000000000000000000000000001")
    monkeypatch.setattr(m, "_mean_between", lambda lower, n: None)
    assert m.exact_mean([1, 2], [3, 3]) == Decimal("0.5")
    assert m.exact_mean([1, 1, 1], [3, 7, 11]) == _rounded(
        (Fraction(1, 3) + Fraction(1, 7) + Fraction(1, 11)) / 3
    )


def test_savings_on_a_half_penny_round_half_to_even():
    benchmark = [Decimal("500.25")] * 3
    pence = m._savings_pence(
        [2001, 2003, 1830], [2, 2, 0], benchmark, np.array([float(b) for b in benchmark])
    )
    assert pence == [1000, 1002, 1830]  # 1000.5 and 1002.5 go to the even penny
    tricky = [Decimal("8.3")]  # 1830 - 100 x 8.3 is 1000 exactly; float64 says 999.99999…
    assert m._savings_pence([1830], [100], tricky, np.array([8.3])) == [1000]
