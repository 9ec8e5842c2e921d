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

Figures are exact decimals (28 significant digits): each percentile interpolates between two
trusts' unit prices, the mean is the exact mean of the trusts' unit prices rounded once.
Savings are exact fractions, from the benchmark as an exact fraction too (a centile such as
the median of two unit prices is often a fraction no decimal holds: a decimal benchmark would
put a saving of exactly k + 1/2 pence a hair to one side of the half). Rounding to a
published precision happens once, at the end: savings to whole pence (half to even).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_FLOOR, Decimal
from fractions import Fraction
from functools import lru_cache
from itertools import chain
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
    lower, fraction = _position(n, q)
    if fraction is None:
        return sorted_values[lower]
    low, high = sorted_values[lower], sorted_values[lower + 1]
    return low + (high - low) * fraction


def exact_percentile(sorted_values: Sequence[Fraction], q: Decimal) -> Fraction:
    """``percentile`` of exact fractions, exactly."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    lower, fraction = _position(len(sorted_values), q)
    if fraction is None:
        return sorted_values[lower]
    low, high = sorted_values[lower], sorted_values[lower + 1]
    return low + (high - low) * Fraction(fraction)


def exact_benchmark(units: Sequence[int], spends: Sequence[int], name: str) -> Fraction:
    """The benchmark centile ``name`` of these trusts' unit prices (pairs without units left
    out), as an exact fraction."""
    prices = sorted(Fraction(s, u) for u, s in zip(units, spends, strict=True) if u > 0)
    return exact_percentile(prices, BENCHMARKS[name])


def _exact_rank(priced: Sequence[tuple[Decimal, TrustTotal]], k: int) -> Fraction:
    """The k-th lowest unit price, exactly. ``priced`` is in order of the prices as decimals,
    whose rounding never puts two prices the wrong way round but can make two different ones
    equal: the k-th is then found among the prices equal to it as decimals."""
    price = priced[k][0]
    first, last = k, k + 1
    while first > 0 and priced[first - 1][0] == price:
        first -= 1
    while last < len(priced) and priced[last][0] == price:
        last += 1
    if last - first == 1:
        return Fraction(priced[k][1].spend_pence, priced[k][1].units)
    tied = sorted(Fraction(t.spend_pence, t.units) for _, t in priced[first:last])
    return tied[k - first]


def _exact_centile(priced: Sequence[tuple[Decimal, TrustTotal]], q: Decimal) -> Fraction:
    """``exact_percentile`` of the prices in ``priced`` (ordered as for ``_exact_rank``)."""
    lower, fraction = _position(len(priced), q)
    low = _exact_rank(priced, lower)
    if fraction is None:
        return low
    return low + (_exact_rank(priced, lower + 1) - low) * Fraction(fraction)


@lru_cache(maxsize=4096)
def _position(n: int, q: Decimal) -> tuple[int, Decimal | None]:
    """Where the q-th percentile of n sorted values sits: the lower rank and the fraction of
    the way to the next one (None when it is that rank's value)."""
    position = (n - 1) * q
    lower = int(position)  # floor: position is never negative
    fraction = position - lower
    return (lower, None) if lower + 1 >= n or fraction == 0 else (lower, fraction)


# The exact mean of n unit prices s/u is bracketed by sum(floor(s * 10**36 / u)) / 10**36 and
# that plus n / 10**36; when both ends round to the same 28 digits, so does the mean.
_LIMB = 10**9  # the batch's long division takes nine decimal places at a step
_LIMBS = 4
_MEAN_SCALE = _LIMB**_LIMBS


def _mean_between(lower: int, n: int) -> Decimal | None:
    """The mean whose n-fold sum, in units of 10**-36, lies in [lower, lower + n); None when the
    two ends round differently."""
    low = Decimal(lower) / Decimal(n * _MEAN_SCALE)
    high = Decimal(lower + n) / Decimal(n * _MEAN_SCALE)
    return low if low == high else None


def exact_mean(spends: Sequence[int], units: Sequence[int]) -> Decimal:
    """The mean of the unit prices spends[i] / units[i], exact and then rounded once."""
    n = len(spends)
    lower = sum(s * _MEAN_SCALE // u for s, u in zip(spends, units, strict=True))
    mean = _mean_between(lower, n)
    if mean is None:
        total = sum(map(Fraction, spends, units), Fraction(0)) / n
        mean = Decimal(total.numerator) / Decimal(total.denominator)
    return mean


class Distribution(NamedTuple):
    """One product's trusts' unit prices summarised (a tuple: the refreshes make one per
    product)."""

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
        if name not in BENCHMARKS:
            raise KeyError(name)
        return getattr(self, name)


_QUARTILES = (Decimal("0.1"), Decimal("0.25"), Decimal("0.5"), Decimal("0.75"))


def _sorted_distribution(values: Sequence[Decimal], mean: Decimal) -> Distribution:
    """The distribution of the trusts' sorted unit prices, whose exact mean is ``mean``."""
    p10, p25, median, p75 = (percentile(values, q) for q in _QUARTILES)
    return _distribution(len(values), values[0], p10, p25, median, p75, values[-1], mean)


def _distribution(
    n: int,
    low: Decimal,
    p10: Decimal,
    p25: Decimal,
    median: Decimal,
    p75: Decimal,
    high: Decimal,
    mean: Decimal,
) -> Distribution:
    return Distribution(
        n_trusts=n,
        min=low,
        p10=p10,
        p25=p25,
        median=median,
        p75=p75,
        max=high,
        mean=mean,
        spread=high / low - 1,
        iqr_over_median=(p75 - p25) / median,
    )


def possible_savings(spend_pence: int, units: int, benchmark: Fraction) -> Fraction:
    """Spend - units x benchmark, clipped at 0 (exact)."""
    saving = spend_pence - units * benchmark
    return saving if saving > 0 else Fraction(0)


def counts(saving: Fraction | Decimal, minimum: int) -> bool:
    """Whether a saving counts in totals: positive and at least ``minimum``."""
    return saving > 0 and saving >= minimum


# A saving computed in decimals, as spend - units x the decimal benchmark (28 significant
# digits), is within this of the exact figure, relative to spend + units x benchmark: the
# benchmark's roundings (its interpolation weights are at least a tenth, so they come to a
# few units in its last place relative to it) and those of the product and the difference
# come to less than 10**-25; this leaves a margin of more than ten thousand.
DECIMAL_SAVING_ERROR = Decimal("1e-20")
_HALF = Fraction(1, 2)
_DECIMAL_HALF = Decimal("0.5")


def decimal_saving_error(spend_pence: int, units: int, benchmark: Decimal) -> Decimal:
    """How far ``spend_pence - units * benchmark`` in decimals can be from the exact saving."""
    return (abs(Decimal(spend_pence)) + abs(units * benchmark)) * DECIMAL_SAVING_ERROR


def near_half_penny(amount: Decimal | Fraction, error: Decimal) -> bool:
    """Whether an amount within ``error`` of an exact one could round the other way: a half
    penny is within ``error`` of it."""
    if isinstance(amount, Decimal):
        above = amount - amount.to_integral_value(rounding=ROUND_FLOOR) - _DECIMAL_HALF
    else:
        above = amount - math.floor(amount) - _HALF
    return abs(above) <= error


def too_close_to_call(saving: Decimal | Fraction, error: Decimal, minimum: int) -> bool:
    """Whether a figure within ``error`` of an exact saving could be on the other side of a
    line that decides it: 0 (is there a saving), ``minimum`` (does it count) or, for a saving,
    a half penny (which way it rounds)."""
    if saving < -error:
        return False  # no saving, whatever the exact figure
    return abs(saving) <= error or abs(saving - minimum) <= error or near_half_penny(saving, error)


@dataclass(frozen=True)
class TrustVariance:
    trust_id: str
    units: int
    spend_pence: int
    unit_price: Decimal
    savings: Fraction  # exact
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
    exact_benchmark: Fraction  # ``benchmark`` is this to 28 significant digits
    trusts: list[TrustVariance] = field(default_factory=list)

    @property
    def benchmark(self) -> Decimal:
        return self.distribution.centile(self.method.benchmark)

    @property
    def reported(self) -> bool:
        return self.distribution.n_trusts >= self.method.min_trusts

    @property
    def savings(self) -> Fraction:
        """Total of the counted savings, exact: the counted trusts' spend less their units at
        the exact benchmark, as ``summarise_many`` computes it for the caches."""
        counted = [t for t in self.trusts if t.counted]
        spend, units = sum(t.spend_pence for t in counted), sum(t.units for t in counted)
        return spend - units * self.exact_benchmark

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
    mean = exact_mean([t.spend_pence for t in rows], [t.units for t in rows])
    dist = _sorted_distribution([price for price, _ in priced], mean)
    benchmark = _exact_centile(priced, method.benchmark_q)
    outlier_above = dist.median * (1 + method.outlier_threshold)
    trusts = [
        TrustVariance(
            trust_id=total.trust_id,
            units=total.units,
            spend_pence=total.spend_pence,
            unit_price=price,
            savings=saving,
            counted=counted,
            outlier=price > outlier_above,
        )
        for price, total, saving, counted in _trust_savings(
            priced, benchmark, method.min_savings_pence
        )
    ]
    return ProductVariance(method, dist, benchmark, trusts)


def _trust_savings(
    priced: Sequence[tuple[Decimal, TrustTotal]], benchmark: Fraction, minimum: int
) -> Iterator[tuple[Decimal, TrustTotal, Fraction, bool]]:
    """Each trust's exact possible savings at ``benchmark`` and whether they count (reach
    ``minimum``), in integers: the savings times the benchmark's denominator."""
    numerator, denominator = benchmark.numerator, benchmark.denominator
    least = minimum * denominator
    for price, total in priced:
        excess = total.spend_pence * denominator - total.units * numerator
        if excess > 0:
            yield price, total, Fraction(excess, denominator), excess >= least
        else:
            yield price, total, _NONE, False


_NONE = Fraction(0)


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


class Summary(NamedTuple):
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
    per-trust objects (the refreshes call this for thousands of products), to the same figures.

    Unit prices are ordered in floating point (a correctly rounded division never reverses
    two prices' order; prices it makes equal are compared exactly) and only the few a
    product's percentiles need become decimals; the exact mean comes from integer long
    division. The per-trust decisions (is a trust an outlier; do its savings reach the
    minimum) and the rounding of the counted savings to pence are made for the whole batch in
    floating point, and again exactly for the rare values that floating point puts too close
    to the line to call (in decimals for an outlier; in fractions, from the exact benchmark,
    for savings). A product with a price beyond the fast path's integer range is computed in
    decimals throughout (its savings in fractions)."""
    if not products:
        return []
    batch = _Batch(products)
    distributions = batch.distributions()
    outlier_lines = [d.median * (1 + method.outlier_threshold) for d in distributions]
    outliers = batch.count_above(outlier_lines)
    minimum = method.min_savings_pence
    savings = {
        name: batch.counted_savings_pence(
            [d.centile(name) for d in distributions], _ExactCentiles(batch, name), minimum
        )
        for name in BENCHMARKS
    }
    return [
        Summary(
            distribution=dist,
            units=batch.units_total[i],
            spend_pence=batch.spend_total[i],
            outliers=outliers[i],
            savings_pence={name: savings[name][i] for name in BENCHMARKS},
        )
        for i, dist in enumerate(distributions)
    ]


# A decision in floating point is trusted only this far (relative) from its line: far above
# float64's rounding of the figures involved, far below anything a penny could tell apart.
_FLOAT_MARGIN = 1e-9
# Counted savings (spend - units x benchmark) in float64 are within 3 x 2**-53 of the exact
# figure, relative to spend + units x benchmark (the float benchmark is the decimal one, 28
# digits of the exact fraction, correctly rounded); this leaves a tenfold margin.
_ROUNDING_MARGIN = 2.0**-48
# Spends and units below this have int64 cross products and 10**9-step long division.
_SMALL = 2**31


class _Batch:
    """Many products' trusts' units and spends as flat arrays, one product after another."""

    def __init__(self, products: Sequence[Columns]):
        units = list(chain.from_iterable(u for u, _ in products))
        spends = list(chain.from_iterable(s for _, s in products))
        owners = np.repeat(np.arange(len(products)), [len(u) for u, _ in products])
        if units and min(units) <= 0:  # a pair with no units left is no purchase
            kept = [k for k, u in enumerate(units) if u > 0]
            units, spends = [units[k] for k in kept], [spends[k] for k in kept]
            owners = owners[kept]
        counts = np.bincount(owners, minlength=len(products))
        if not counts.all():
            raise ValueError("no purchases")
        self.units, self.spends = units, spends
        self.starts = [0, *np.cumsum(counts).tolist()]
        self.owner = owners
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
        self._exact_prices: dict[int, list[Fraction]] = {}
        # set by ``distributions``: the batch's pairs in price order within each product, and
        # per product whether that order is exact (so its exact centiles need no sorting)
        self._price_order: np.ndarray | None = None
        self._ordered_exactly: list[bool] = []

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

    def distributions(self) -> list[Distribution]:
        all_spends, all_units = self.spends_i, self.units_i
        if all_spends is None or all_units is None:
            return [self._decimal_distribution(a, b) for a, b in self._segments()]
        small_pairs = (all_units < _SMALL) & (np.abs(all_spends) < _SMALL)
        small = np.logical_and.reduceat(small_pairs, self.starts[:-1])
        order = np.lexsort((self.prices_f, self.owner))
        spends, units = all_spends[order], all_units[order]
        small &= self._float_order_is_exact(spends, units, self.prices_f[order], small)
        self._price_order, self._ordered_exactly = order, small.tolist()
        lowers = self._mean_lower_bounds(all_spends, all_units, small_pairs)
        counts = np.diff(self.starts)
        means = [
            _mean_between(lower, n) if fast else None
            for lower, n, fast in zip(lowers, counts.tolist(), small.tolist(), strict=True)
        ]
        # the few sorted prices each product's figures need, as decimals, each once
        plans = {n: [_position(n, q) for q in _QUARTILES] for n in set(counts.tolist())}
        starts = np.array(self.starts[:-1])
        wanted = [starts, starts + counts - 1]
        for j in range(len(_QUARTILES)):
            lower = starts + np.array([plans[n][j][0] for n in counts.tolist()], dtype=np.int64)
            wanted += [lower, np.minimum(lower + 1, starts + counts - 1)]
        at = _prices_at(spends, units, wanted)
        quartiles = []
        for j in range(len(_QUARTILES)):
            fractions = [plans[n][j][1] for n in counts.tolist()]
            lows, highs = at[2 + 2 * j], at[3 + 2 * j]
            quartiles.append(
                [
                    low if fraction is None else low + (high - low) * fraction
                    for low, high, fraction in zip(lows, highs, fractions, strict=True)
                ]
            )
        return [
            self._decimal_distribution(a, b)
            if mean is None
            else _distribution(b - a, low, p10, p25, median, p75, high, mean)
            for (a, b), mean, low, high, p10, p25, median, p75 in zip(
                self._segments(), means, at[0], at[1], *quartiles, strict=True
            )
        ]

    def _float_order_is_exact(
        self, spends: np.ndarray, units: np.ndarray, prices: np.ndarray, small: np.ndarray
    ) -> np.ndarray:
        """Per product (of those ``small``), False when float64 makes two of its sorted prices
        equal that are not: that product is then ordered in decimals."""
        exact = np.ones(len(small), dtype=bool)
        level = np.flatnonzero((prices[1:] == prices[:-1]) & (self.owner[1:] == self.owner[:-1]))
        level = level[small[self.owner[level]]]
        differ = spends[level] * units[level + 1] != spends[level + 1] * units[level]
        exact[self.owner[level[differ]]] = False
        return exact

    def _decimal_distribution(self, a: int, b: int) -> Distribution:
        spends, units = self.spends[a:b], self.units[a:b]
        prices = sorted(map(truediv, map(Decimal, spends), map(Decimal, units)))
        return _sorted_distribution(prices, exact_mean(spends, units))

    def _mean_lower_bounds(
        self, spends: np.ndarray, units: np.ndarray, small_pairs: np.ndarray
    ) -> list[int]:
        """Per product, the sum of floor(spend x 10**36 / units) over its trusts (products
        with a pair outside ``small_pairs`` get a meaningless figure)."""
        spends = np.where(small_pairs, spends, 0)
        units = np.where(small_pairs, units, 1)
        quotient, remainder = np.divmod(spends, units)
        digits = [quotient]
        for _ in range(_LIMBS):
            quotient, remainder = np.divmod(remainder * _LIMB, units)
            digits.append(quotient)
        lowers, *places = (np.add.reduceat(d, self.starts[:-1]).tolist() for d in digits)
        for place in places:
            lowers = [low * _LIMB + d for low, d in zip(lowers, place, strict=True)]
        return lowers

    def count_above(self, lines: Sequence[Decimal]) -> list[int]:
        """Per product, how many of its trusts' unit prices are above its line."""
        line = np.array([float(x) for x in lines])[self.owner]
        above = self.prices_f > line
        close = np.abs(self.prices_f - line) <= _FLOAT_MARGIN * np.abs(line)
        for k in np.flatnonzero(close).tolist():
            above[k] = self.price(k) > lines[self.owner[k]]
        return np.bincount(self.owner, weights=above, minlength=len(lines)).astype(int).tolist()

    def exact_centile(self, i: int, q: Decimal) -> Fraction:
        """Product i's centile q of its trusts' unit prices, as an exact fraction: from the
        prices at its two ranks, where ``distributions`` found the product's order exact;
        otherwise from all its prices sorted as fractions."""
        a, b = self.starts[i], self.starts[i + 1]
        order = self._price_order
        if order is not None and self._ordered_exactly[i]:
            lower, fraction = _position(b - a, q)
            low = Fraction(self.spends[order[a + lower]], self.units[order[a + lower]])
            if fraction is None:
                return low
            k = order[a + lower + 1]
            return low + (Fraction(self.spends[k], self.units[k]) - low) * Fraction(fraction)
        prices = self._exact_prices.get(i)
        if prices is None:
            prices = sorted(map(Fraction, self.spends[a:b], self.units[a:b]))
            self._exact_prices[i] = prices
        return exact_percentile(prices, q)

    def counted_savings_pence(
        self, benchmarks: Sequence[Decimal], exact: Sequence[Fraction], minimum: int
    ) -> list[int]:
        """Per product, the sum of its trusts' savings (spend - units x benchmark) that are
        positive and reach ``minimum``, exact, rounded to whole pence (half to even).
        ``benchmarks``: the decimal benchmarks; ``exact``: the same exactly (asked for only
        where floating point cannot decide)."""
        benchmark = np.array([float(b) for b in benchmarks])
        cost_at_benchmark = self.units_f * benchmark[self.owner]
        saving = self.spends_f - cost_at_benchmark
        counted = saving >= minimum if minimum > 0 else saving > 0
        scale = np.abs(self.spends_f) + np.abs(cost_at_benchmark)
        close = np.abs(saving - minimum) <= _FLOAT_MARGIN * scale
        for k in np.flatnonzero(close).tolist():
            counted[k] = counts(self.spends[k] - self.units[k] * exact[self.owner[k]], minimum)
        spends = self._sums(self.spends, self.spends_i, counted)
        units = self._sums(self.units, self.units_i, counted)
        return _savings_pence(spends, units, exact, benchmark)


class _ExactCentiles(Sequence[Fraction]):
    """A batch's products' exact benchmark centiles, each computed when first asked for (only
    the few products whose savings floating point cannot round or count need one)."""

    def __init__(self, batch: _Batch, name: str):
        self.batch, self.q = batch, BENCHMARKS[name]

    def __len__(self) -> int:
        return len(self.batch.starts) - 1

    def __getitem__(self, i: int) -> Fraction:
        return self.batch.exact_centile(i, self.q)


def _prices_at(
    spends: np.ndarray, units: np.ndarray, wanted: list[np.ndarray]
) -> list[list[Decimal]]:
    """For each array of positions in ``wanted``, the unit prices there as decimals (each
    distinct position divided once)."""
    positions, where = np.unique(np.concatenate(wanted), return_inverse=True)
    decimals = list(
        map(
            truediv,
            map(Decimal, spends[positions].tolist()),
            map(Decimal, units[positions].tolist()),
        )
    )
    return [[decimals[k] for k in part.tolist()] for part in np.split(where, len(wanted))]


def _savings_pence(
    spends: list[int],
    units: list[int],
    benchmarks: Sequence[Fraction | Decimal],
    benchmark: np.ndarray,
) -> list[int]:
    """round_pence(spends[i] - units[i] x benchmarks[i]) for each i, exact (``benchmarks``
    exact, as fractions or decimals; ``benchmark``: them as floats): in floating point where
    no half penny is within its error, otherwise in fractions."""
    spends_f, units_f = np.array(spends, dtype=np.float64), np.array(units, dtype=np.float64)
    cost = units_f * benchmark
    saving = spends_f - cost
    margin = _ROUNDING_MARGIN * (np.abs(spends_f) + np.abs(cost))
    unsure = np.abs(saving - (np.floor(saving) + 0.5)) <= margin
    unsure |= (np.abs(spends_f) >= 2.0**53) | (np.abs(units_f) >= 2.0**53)
    pence = np.rint(np.where(unsure, 0, saving)).astype(np.int64).tolist()
    for k in np.flatnonzero(unsure).tolist():
        pence[k] = round_pence(spends[k] - units[k] * Fraction(benchmarks[k]))
    return pence
