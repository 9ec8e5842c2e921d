"""The price-variance method (DESIGN §6) as pure functions on exact Decimals.

No database here: the service feeds per-trust totals in, and the property tests check every
figure against ``numpy.percentile`` on the same data.

1. Each trust's volume-weighted unit price = total paid / total base units.
2. Across trusts (each counts once): n, min, p10, p25, median, p75, max, mean, spread
   (max/min - 1) and IQR/median. Percentiles interpolate linearly at position (n - 1)·q, as
   ``numpy.percentile``'s default and PostgreSQL's ``percentile_cont``.
3. Benchmark = a chosen centile (p10 by default; p25 or the median).
4. A trust's possible savings = spend - units x benchmark, clipped at 0. A product's total
   counts only the trusts whose savings reach the minimum.
5. Outlier: unit price above median x (1 + threshold).
6. Reported only with at least ``min_trusts`` trusts.

Rounding happens once, at the end: savings to whole pence (half to even) when published.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from operator import truediv
from typing import NamedTuple

import numpy as np

from ..money import round_pence

BENCHMARKS: dict[str, Decimal] = {
    "p10": Decimal("0.10"),
    "p25": Decimal("0.25"),
    "median": Decimal("0.50"),
}
DEFAULT_BENCHMARK = "p10"
DEFAULT_MIN_TRUSTS = 3
DEFAULT_OUTLIER_THRESHOLD = Decimal("0.20")
# Savings below £10 per trust per product over the window are left out of totals, so that many
# tiny differences do not add up to a headline figure (as OpenPrescribing does).
DEFAULT_MIN_SAVINGS_PENCE = 1000
WINDOW_DAYS = 365


@dataclass(frozen=True)
class Method:
    """The method's parameters; the defaults are what the caches hold."""

    benchmark: str = DEFAULT_BENCHMARK
    min_trusts: int = DEFAULT_MIN_TRUSTS
    outlier_threshold: Decimal = DEFAULT_OUTLIER_THRESHOLD
    min_savings_pence: int = DEFAULT_MIN_SAVINGS_PENCE

    def __post_init__(self) -> None:
        if self.benchmark not in BENCHMARKS:
            raise ValueError(f"benchmark must be one of {', '.join(BENCHMARKS)}")
        if self.min_trusts < 1:
            raise ValueError("min_trusts must be at least 1")
        if self.outlier_threshold < 0:
            raise ValueError("outlier_threshold must not be negative")
        if self.min_savings_pence < 0:
            raise ValueError("min_savings_pence must not be negative")

    @property
    def benchmark_q(self) -> Decimal:
        return BENCHMARKS[self.benchmark]

    def with_benchmark(self, benchmark: str) -> Method:
        return replace(self, benchmark=benchmark)

    @property
    def caches_cover(self) -> bool:
        """True when the cached totals answer for this method (any benchmark centile)."""
        return (
            self.min_savings_pence == DEFAULT_MIN_SAVINGS_PENCE
            and self.outlier_threshold == DEFAULT_OUTLIER_THRESHOLD
        )


DEFAULT_METHOD = Method()


class TrustTotal(NamedTuple):
    """One trust's purchases of one product over the window (a tuple: the full refresh makes
    one per trust and product)."""

    trust_id: str
    units: int
    spend_pence: int

    @property
    def unit_price(self) -> Decimal:
        return Decimal(self.spend_pence) / Decimal(self.units)


def percentile(sorted_values: Sequence[Decimal], q: Decimal) -> Decimal:
    """Linear interpolation between closest ranks at position (n - 1)·q (numpy's default)."""
    n = len(sorted_values)
    if n == 0:
        raise ValueError("percentile of no values")
    position = (n - 1) * q
    lower = int(position)  # floor: position is never negative
    fraction = position - lower
    if lower + 1 >= n or fraction == 0:
        return sorted_values[lower]
    low, high = sorted_values[lower], sorted_values[lower + 1]
    return low + (high - low) * fraction


@dataclass(frozen=True)
class Distribution:
    n_trusts: int
    min: Decimal
    p10: Decimal
    p25: Decimal
    median: Decimal
    p75: Decimal
    max: Decimal
    mean: Decimal
    spread: Decimal  # max / min - 1
    iqr_over_median: Decimal

    def centile(self, name: str) -> Decimal:
        return {"p10": self.p10, "p25": self.p25, "median": self.median}[name]


def distribution(unit_prices: Iterable[Decimal]) -> Distribution:
    values = sorted(unit_prices)
    if not values:
        raise ValueError("distribution of no values")
    return _sorted_distribution(values)


def _sorted_distribution(values: Sequence[Decimal]) -> Distribution:
    n = len(values)
    median = percentile(values, Decimal("0.5"))
    p25 = percentile(values, Decimal("0.25"))
    p75 = percentile(values, Decimal("0.75"))
    return Distribution(
        n_trusts=n,
        min=values[0],
        p10=percentile(values, Decimal("0.1")),
        p25=p25,
        median=median,
        p75=p75,
        max=values[-1],
        mean=sum(values, Decimal(0)) / n,
        spread=values[-1] / values[0] - 1,
        iqr_over_median=(p75 - p25) / median,
    )


def possible_savings(spend_pence: int, units: int, benchmark: Decimal) -> Decimal:
    """Spend - units x benchmark, clipped at 0 (exact)."""
    saving = Decimal(spend_pence) - Decimal(units) * benchmark
    return saving if saving > 0 else Decimal(0)


@dataclass(frozen=True)
class TrustVariance:
    trust_id: str
    units: int
    spend_pence: int
    unit_price: Decimal
    savings: Decimal  # exact
    counted: bool  # savings reach the minimum, so they count in totals
    outlier: bool

    @property
    def possible_savings_pence(self) -> int:
        return round_pence(self.savings)


@dataclass(frozen=True)
class ProductVariance:
    """One product over one window: the distribution and each trust's row (cheapest first)."""

    method: Method
    distribution: Distribution
    trusts: list[TrustVariance] = field(default_factory=list)

    @property
    def benchmark(self) -> Decimal:
        return self.distribution.centile(self.method.benchmark)

    @property
    def reported(self) -> bool:
        return self.distribution.n_trusts >= self.method.min_trusts

    @property
    def savings(self) -> Decimal:
        """Total of the counted savings: the counted trusts' spend less their units at the
        benchmark, in decimals (28 digits), as ``summarise_many`` computes it for the caches."""
        counted = [t for t in self.trusts if t.counted]
        spend, units = sum(t.spend_pence for t in counted), sum(t.units for t in counted)
        return Decimal(spend) - Decimal(units) * self.benchmark

    @property
    def possible_savings_pence(self) -> int:
        return round_pence(self.savings)

    @property
    def outliers(self) -> int:
        return sum(1 for t in self.trusts if t.outlier)

    @property
    def units(self) -> int:
        return sum(t.units for t in self.trusts)

    @property
    def spend_pence(self) -> int:
        return sum(t.spend_pence for t in self.trusts)


def analyse(
    totals: Iterable[TrustTotal], method: Method = DEFAULT_METHOD
) -> ProductVariance | None:
    """The variance of one product from its trusts' totals (None when no trust bought it)."""
    rows = [t for t in totals if t.units > 0]
    if not rows:
        return None
    priced = sorted(((t.unit_price, t) for t in rows), key=lambda pair: (pair[0], pair[1].trust_id))
    dist = distribution(price for price, _ in priced)
    benchmark = dist.centile(method.benchmark)
    outlier_above = dist.median * (1 + method.outlier_threshold)
    trusts = []
    for price, total in priced:
        saving = possible_savings(total.spend_pence, total.units, benchmark)
        trusts.append(
            TrustVariance(
                trust_id=total.trust_id,
                units=total.units,
                spend_pence=total.spend_pence,
                unit_price=price,
                savings=saving,
                counted=saving > 0 and saving >= method.min_savings_pence,
                outlier=price > outlier_above,
            )
        )
    return ProductVariance(method=method, distribution=dist, trusts=trusts)


def percentile_rank(sorted_values: Sequence[Decimal], value: Decimal) -> Decimal:
    """Where ``value`` falls among the trusts' unit prices, 0-100: the share paying less, with
    ties counted half (the "mean" percentile rank)."""
    below = sum(1 for v in sorted_values if v < value)
    equal = sum(1 for v in sorted_values if v == value)
    return (Decimal(below) + Decimal(equal) / 2) * 100 / len(sorted_values)


VERDICTS = ("below_benchmark", "typical", "above_median", "outlier")


def verdict(unit_price: Decimal, dist: Distribution, method: Method = DEFAULT_METHOD) -> str:
    """``below_benchmark`` at or below the benchmark (nothing to save), ``typical`` up to the
    median, ``above_median`` above it, ``outlier`` above median x (1 + threshold)."""
    if unit_price > dist.median * (1 + method.outlier_threshold):
        return "outlier"
    if unit_price > dist.median:
        return "above_median"
    if unit_price <= dist.centile(method.benchmark):
        return "below_benchmark"
    return "typical"


@dataclass(frozen=True)
class Summary:
    """What the cache keeps per product: the distribution, totals, the outlier count and the
    counted savings for each benchmark centile, all under the default method."""

    distribution: Distribution
    units: int
    spend_pence: int
    outliers: int
    savings_pence: dict[str, int]


Columns = tuple[Sequence[int], Sequence[int]]  # one product's trusts' units and spends


def summarise_columns(
    units: Sequence[int], spends: Sequence[int], method: Method = DEFAULT_METHOD
) -> Summary:
    """The cached summary of one product from its trusts' units and spends (parallel lists)."""
    return summarise_many([(units, spends)], method)[0]


def summarise_many(products: Sequence[Columns], method: Method = DEFAULT_METHOD) -> list[Summary]:
    """``analyse`` for every benchmark centile at once, for a batch of products, without
    per-trust objects (the refreshes call this for thousands of products).

    The distribution is computed in exact decimals, as ``distribution`` does. The per-trust
    decisions (is a trust an outlier; do its savings reach the minimum) are made for the whole
    batch in floating point, and again in decimals for the rare trusts that floating point
    puts too close to the line to call. A product's counted savings are then its counted
    trusts' spend minus their units times the benchmark, in decimals."""
    if not products:
        return []
    batch = _Batch(products)
    distributions = [_sorted_distribution(prices) for prices in batch.sorted_prices()]
    outlier_lines = [d.median * (1 + method.outlier_threshold) for d in distributions]
    outliers = batch.count_above(outlier_lines)
    minimum = method.min_savings_pence
    savings = {
        name: batch.counted_savings([d.centile(name) for d in distributions], minimum)
        for name in BENCHMARKS
    }
    return [
        Summary(
            distribution=dist,
            units=batch.units_total[i],
            spend_pence=batch.spend_total[i],
            outliers=outliers[i],
            savings_pence={name: round_pence(savings[name][i]) for name in BENCHMARKS},
        )
        for i, dist in enumerate(distributions)
    ]


# A decision in floating point is trusted only this far (relative) from its line: far above
# float64's rounding of the figures involved, far below anything a penny could tell apart.
_FLOAT_MARGIN = 1e-9


class _Batch:
    """Many products' trusts' units and spends as flat arrays, one product after another."""

    def __init__(self, products: Sequence[Columns]):
        units = [u for product_units, _ in products for u in product_units]
        spends = [s for _, product_spends in products for s in product_spends]
        owners = [i for i, (product_units, _) in enumerate(products) for _ in product_units]
        if any(u <= 0 for u in units):  # a pair with no units left is no purchase
            kept = [k for k, u in enumerate(units) if u > 0]
            units, spends, owners = ([v[k] for k in kept] for v in (units, spends, owners))
        counts = np.bincount(np.array(owners, dtype=np.int64), minlength=len(products))
        if not counts.all():
            raise ValueError("no purchases")
        self.units, self.spends = units, spends
        self.starts = [0, *np.cumsum(counts).tolist()]
        self.owner = np.array(owners, dtype=np.int64)
        self.units_f = np.array(units, dtype=np.float64)
        self.spends_f = np.array(spends, dtype=np.float64)
        self.prices_f = self.spends_f / self.units_f
        # int64 sums are exact unless a product's total could pass 2**63 (never in practice)
        fits = len(units) * max(max(map(abs, units)), max(map(abs, spends))) < 2**63
        self.units_i = np.array(units, dtype=np.int64) if fits else None
        self.spends_i = np.array(spends, dtype=np.int64) if fits else None
        everything = np.ones(len(units), dtype=bool)
        self.units_total = self._sums(units, self.units_i, everything)
        self.spend_total = self._sums(spends, self.spends_i, everything)

    def _sums(self, values: list[int], array: np.ndarray | None, mask: np.ndarray) -> list[int]:
        """Per product, the exact sum of its ``values`` (``array`` as int64) where ``mask``."""
        if array is not None:
            return np.add.reduceat(np.where(mask, array, 0), self.starts[:-1]).tolist()
        return [
            sum(v for v, keep in zip(values[a:b], mask[a:b], strict=True) if keep)
            for a, b in self._segments()
        ]

    def _segments(self) -> Iterator[tuple[int, int]]:
        return zip(self.starts, self.starts[1:], strict=False)

    def price(self, k: int) -> Decimal:
        return Decimal(self.spends[k]) / Decimal(self.units[k])

    def sorted_prices(self) -> Iterator[list[Decimal]]:
        for a, b in self._segments():
            prices = list(
                map(truediv, map(Decimal, self.spends[a:b]), map(Decimal, self.units[a:b]))
            )
            prices.sort()
            yield prices

    def count_above(self, lines: Sequence[Decimal]) -> list[int]:
        """Per product, how many of its trusts' unit prices are above its line."""
        line = np.array([float(x) for x in lines])[self.owner]
        above = self.prices_f > line
        close = np.abs(self.prices_f - line) <= _FLOAT_MARGIN * np.abs(line)
        for k in np.flatnonzero(close).tolist():
            above[k] = self.price(k) > lines[self.owner[k]]
        return np.bincount(self.owner, weights=above, minlength=len(lines)).astype(int).tolist()

    def counted_savings(self, benchmarks: Sequence[Decimal], minimum: int) -> list[Decimal]:
        """Per product, the exact sum of its trusts' savings (spend - units x benchmark) that
        are positive and reach ``minimum``."""
        benchmark = np.array([float(b) for b in benchmarks])[self.owner]
        cost_at_benchmark = self.units_f * benchmark
        saving = self.spends_f - cost_at_benchmark
        counted = saving >= minimum if minimum > 0 else saving > 0
        scale = np.abs(self.spends_f) + np.abs(cost_at_benchmark)
        close = np.abs(saving - minimum) <= _FLOAT_MARGIN * scale
        for k in np.flatnonzero(close).tolist():
            exact = self.spends[k] - self.units[k] * benchmarks[self.owner[k]]
            counted[k] = exact > 0 and exact >= minimum
        spends = self._sums(self.spends, self.spends_i, counted)
        units = self._sums(self.units, self.units_i, counted)
        return [
            Decimal(s) - Decimal(u) * b for s, u, b in zip(spends, units, benchmarks, strict=True)
        ]
