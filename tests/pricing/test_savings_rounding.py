"""Possible savings are rounded once, half to even, from the exact rational figure
(DESIGN §4): spend - units x benchmark, where the benchmark is a centile of the trusts' unit
prices and so, like the median of two of them, often a fraction no decimal holds exactly.
A figure of exactly k + 1/2 pence must go to the even penny, whichever side of the half a
rounded benchmark would have put it.

The reference here is plain fractions: each trust's unit price spend/units, numpy's linear
interpolation at (n - 1)·q, the savings clipped at 0, those reaching the minimum summed, and
Python's ``round`` of a ``Fraction`` (exact, half to even)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from marketplace.accounts.models import Organisation, OrgType
from marketplace.catalog.models import Product
from marketplace.pricing import method as m
from marketplace.pricing import rollups, service
from marketplace.pricing.models import ProductStats

from .conftest import line

Q = {"p10": Fraction(1, 10), "p25": Fraction(1, 4), "median": Fraction(1, 2)}


@dataclass(frozen=True)
class Reference:
    benchmark: Fraction
    savings: list[Fraction]  # per trust, in the order given
    counted: list[bool]

    @property
    def total(self) -> Fraction:
        return sum((s for s, c in zip(self.savings, self.counted, strict=True) if c), Fraction(0))


def reference(units: list[int], spends: list[int], benchmark: str, minimum: int) -> Reference:
    prices = sorted(Fraction(s, u) for u, s in zip(units, spends, strict=True))
    position = (len(prices) - 1) * Q[benchmark]
    lower = math.floor(position)
    value = prices[lower]
    if lower + 1 < len(prices):
        value += (prices[lower + 1] - prices[lower]) * (position - lower)
    savings = [
        max(Fraction(s) - u * value, Fraction(0)) for u, s in zip(units, spends, strict=True)
    ]
    return Reference(value, savings, [s > 0 and s >= minimum for s in savings])


def test_round_of_a_fraction_is_exact_half_to_even():
    assert [round(Fraction(k, 2)) for k in (1, 3, 5, 7, -1, -3)] == [0, 2, 2, 4, 0, -2]
    assert round(Fraction(10**30 + 1, 2)) == 10**30 // 2
    assert round(Fraction(1, 2) + Fraction(1, 10**40)) == 1


# Four trusts; the benchmark is the median, halfway between the second and third unit prices
# (41/11 and 90/21; 17/7 and 54/13), which no decimal holds; the dearest trust's savings are
# exactly k + 1/2 pence, k even in the first and odd in the second.
EXAMPLES = {
    "k even": ([11, 11, 21, 1617], [40, 41, 90, 7753], Fraction(2549, 2)),
    "k odd": ([7, 7, 13, 637], [16, 17, 54, 4716], Fraction(5239, 2)),
}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_a_half_penny_of_savings_goes_to_the_even_penny(name):
    units, spends, half = EXAMPLES[name]
    ref = reference(units, spends, "median", m.DEFAULT_MIN_SAVINGS_PENCE)
    assert ref.savings[3] == half
    assert half.denominator == 2
    assert ref.counted == [False, False, False, True]
    even = round(half)
    assert even % 2 == 0
    assert abs(even - half) == Fraction(1, 2)

    method = m.Method(benchmark="median")
    totals = [
        m.TrustTotal(f"T{i}", u, s) for i, (u, s) in enumerate(zip(units, spends, strict=True))
    ]
    variance = m.analyse(totals, method)
    by_trust = {t.trust_id: t for t in variance.trusts}
    assert by_trust["T3"].possible_savings_pence == even
    assert [by_trust[f"T{i}"].possible_savings_pence for i in range(4)] == [
        round(s) for s in ref.savings
    ]
    assert variance.possible_savings_pence == even
    assert m.summarise_columns(units, spends, method).savings_pence["median"] == even
    assert m.summarise_columns(units, spends).savings_pence["median"] == even


# --- a property, on the method alone -------------------------------------------------------

SMALL_UNITS = [1, 2, 3, 4, 6, 7, 9, 12, 21]  # their least common multiple is 252


@st.composite
def half_penny_prone(draw) -> tuple[list[int], list[int]]:
    """A product's trusts' units and spends where savings of exactly k + 1/2 pence are common:
    some trusts buy a few units at prices with denominators 3, 7, 9, 21 (which no decimal
    holds); the others buy a multiple of 10 x their least common multiple of units, so that
    their units at a centile (an interpolation in tenths or quarters) are often a whole or
    half number of pence."""
    few = draw(
        st.lists(
            st.sampled_from(SMALL_UNITS).flatmap(
                lambda u: st.tuples(st.just(u), st.integers(u, 60 * u))
            ),
            min_size=1,
            max_size=8,
        )
    )
    lcm = math.lcm(*(u for u, _ in few))
    many = draw(
        st.lists(
            st.tuples(st.integers(1, 40), st.integers(1, 60), st.integers(0, 5000)).map(
                lambda t: (10 * lcm * t[0], 10 * lcm * t[0] * t[1] + t[2])
            ),
            min_size=1,
            max_size=6,
        )
    )
    trusts = draw(st.permutations(few + many))
    return [u for u, _ in trusts], [s for _, s in trusts]


@settings(max_examples=400, deadline=None)
@given(
    products=st.lists(half_penny_prone(), min_size=1, max_size=5),
    benchmark=st.sampled_from(list(m.BENCHMARKS)),
    minimum=st.sampled_from([0, 1, 1000]),
)
def test_every_savings_figure_is_the_exact_one_rounded_once(products, benchmark, minimum):
    method = m.Method(benchmark=benchmark, min_savings_pence=minimum)
    for units, spends in products:
        ref = reference(units, spends, benchmark, minimum)
        totals = [
            m.TrustTotal(f"T{i:02d}", u, s)
            for i, (u, s) in enumerate(zip(units, spends, strict=True))
        ]
        variance = m.analyse(totals, method)
        by_trust = {t.trust_id: t for t in variance.trusts}
        for i, (saving, counted) in enumerate(zip(ref.savings, ref.counted, strict=True)):
            row = by_trust[f"T{i:02d}"]
            assert row.possible_savings_pence == round(saving)
            assert row.counted == counted
        assert variance.possible_savings_pence == round(ref.total)
    batch = m.summarise_many(products, method)
    for (units, spends), summary in zip(products, batch, strict=True):
        for name in m.BENCHMARKS:
            expected = reference(units, spends, name, minimum).total
            assert summary.savings_pence[name] == round(expected), name


# --- through the database: the caches, the refreshes and the read paths ----------------------


def _buy(import_as, product: Product, trusts: list[Organisation], units, spends) -> None:
    """Each trust buys the product once (one line of ``units`` single units)."""
    for trust, u, s in zip(trusts, units, spends, strict=True):
        row = line(f"X{product.gtin}", 1, gtin=product.gtin, units_per_pack=u, total_price_pence=s)
        import_as(trust, [row])


@pytest.fixture
def halves(world, import_as, new_product):
    """The two examples as two products; the dearest trust is RT3 in the first, RT4 in the
    second, so each of them saves exactly k + 1/2 pence in all."""
    products = {}
    for name, trusts in (("k even", [0, 1, 2, 3]), ("k odd", [0, 1, 2, 4])):
        units, spends, _ = EXAMPLES[name]
        products[name] = new_product()
        _buy(import_as, products[name], [world.trust(i) for i in trusts], units, spends)
    return products


def _assert_published(client, world, halves) -> None:
    even, odd = round(EXAMPLES["k even"][2]), round(EXAMPLES["k odd"][2])
    assert (even, odd) == (1274, 2620)
    for query in ("benchmark=median", "benchmark=median&min_savings_pence=999"):
        ranking = client.get(f"/api/v1/price-variance?{query}").get_json()
        savings = {i["product_id"]: i["possible_savings_pence"] for i in ranking["items"]}
        assert savings == {halves["k even"].id: even, halves["k odd"].id: odd}, query
        assert ranking["totals"]["possible_savings_pence"] == even + odd
        category = client.get(f"/api/v1/price-variance?{query}&category=18424300").get_json()
        assert category["totals"]["possible_savings_pence"] == even + odd
        for ods, expected in (("RT3", even), ("RT4", odd)):
            trust = client.get(f"/api/v1/trusts/{ods}/savings?{query}").get_json()
            assert [i["possible_savings_pence"] for i in trust["items"]] == [expected], query
            assert trust["total_possible_savings_pence"] == expected
    for name, product in halves.items():
        units, spends, _ = EXAMPLES[name]
        ref = reference(units, spends, "median", m.DEFAULT_MIN_SAVINGS_PENCE)
        body = client.get(
            f"/api/v1/products/{product.id}/price-variance?benchmark=median"
        ).get_json()
        rows = {r["spend_pence"]: r["possible_savings_pence"] for r in body["trusts"]}
        assert rows == {s: round(x) for s, x in zip(spends, ref.savings, strict=True)}
        assert body["distribution"]["possible_savings_pence"] == round(ref.total)


def test_published_figures_round_the_half_penny_to_even(client, world, halves):
    _assert_published(client, world, halves)


def test_and_so_do_they_after_a_full_refresh(client, session_factory, world, halves):
    with session_factory.begin() as session:
        rollups.refresh_all(session, rebuild=True)
    with session_factory() as session:
        rows = session.execute(select(ProductStats.product_id, ProductStats.savings_median_pence))
        stored = {product_id: pence for product_id, pence in rows}
    assert stored == {halves["k even"].id: 1274, halves["k odd"].id: 2620}
    _assert_published(client, world, halves)


# Two products each, bought by RT0-RT2 and by the trust named: the trust's savings on each
# are not near a half penny (97197/70 and 69264/35 pence; 9349/7 and 18381/14), but together
# they come to exactly 3367 1/2 and 2648 1/2 pence. The benchmark is the default p10.
TOTALS = {
    "RT3": (
        ([7, 12, 9, 36], [18, 27, 41, 1473], Fraction(97197, 70)),
        ([9, 9, 7, 54], [42, 28, 30, 2166], Fraction(69264, 35)),
    ),
    "RT4": (
        ([7, 9, 3, 36], [31, 42, 9, 1459], Fraction(9349, 7)),
        ([7, 9, 12, 36], [32, 44, 37, 1440], Fraction(18381, 14)),
    ),
}


def test_a_trust_total_of_exactly_half_a_penny_goes_to_the_even_penny(
    client, world, import_as, new_product
):
    trusts = {"RT3": world.trust(3), "RT4": world.trust(4)}
    for ods, products in TOTALS.items():
        for units, spends, saving in products:
            assert reference(units, spends, "p10", 1000).savings[3] == saving
            buyers = [world.trust(0), world.trust(1), world.trust(2), trusts[ods]]
            _buy(import_as, new_product(), buyers, units, spends)
    for ods, expected in (("RT3", 3368), ("RT4", 2648)):
        exact = sum((saving for _, _, saving in TOTALS[ods]), Fraction(0))
        assert exact.denominator == 2
        assert round(exact) == expected
        for query in ("", "?min_savings_pence=999"):  # the caches; computed
            body = client.get(f"/api/v1/trusts/{ods}/savings{query}").get_json()
            assert body["total_possible_savings_pence"] == expected, query
            items = sorted(i["possible_savings_pence"] for i in body["items"])
            assert items == sorted(round(s) for _, _, s in TOTALS[ods])


DB_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def small_market(draw) -> list[tuple[list[int], list[int]]]:
    """One to three products, each bought by the same three to six trusts (one line each,
    within the importer's limits)."""
    n = draw(st.integers(3, 6))
    products = []
    for _ in range(draw(st.integers(1, 3))):
        units, spends = draw(half_penny_prone().filter(lambda p: len(p[0]) >= n))
        products.append((units[:n], spends[:n]))
    return products


@DB_SETTINGS
@given(market=small_market(), benchmark=st.sampled_from(list(m.BENCHMARKS)))
def test_trust_totals_and_rows_are_the_exact_figures_rounded_once(
    factory, import_as, new_product, session_factory, market, benchmark
):
    """Each example has trusts of its own, so a trust's total is over this example's products."""
    trusts = [factory.org(OrgType.TRUST) for _ in market[0][0]]
    products = [new_product() for _ in market]
    for product, (units, spends) in zip(products, market, strict=True):
        _buy(import_as, product, trusts, units, spends)
    for minimum in (m.DEFAULT_MIN_SAVINGS_PENCE, 0):  # the caches, and computed
        method = m.Method(benchmark=benchmark, min_savings_pence=minimum)
        refs = [reference(u, s, benchmark, minimum) for u, s in market]
        with session_factory() as session:
            for i, trust in enumerate(trusts):
                page = service.trust_savings(session, trust.ods_code, method=method, limit=10)
                items = {item["product_id"]: item["possible_savings_pence"] for item in page.items}
                counted = [
                    (p.id, r.savings[i])
                    for p, r in zip(products, refs, strict=True)
                    if r.counted[i]
                ]
                assert items == {p: round(s) for p, s in counted}, (i, minimum)
                exact_total = sum((s for _, s in counted), Fraction(0))
                assert page.total_possible_savings_pence == round(exact_total), (i, minimum)
            for product, ref in zip(products, refs, strict=True):
                view = service.product_variance(session, product.id, method=method)
                assert view.variance.possible_savings_pence == round(ref.total)
