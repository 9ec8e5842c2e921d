"""Money: integer pence everywhere; Decimal only for derived per-unit prices.

Rules (DESIGN §4): amounts are ``int`` pence. A per-unit price (pence per base unit) may be
fractional; it is computed exactly with ``Decimal`` and rounded once, at the end, to 4 decimal
places with round-half-to-even. VAT is computed per line and rounded half-up to the penny, as
HMRC allows for line-level VAT.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, getcontext, localcontext
from fractions import Fraction

UNIT_PRICE_PLACES = Decimal("0.0001")


def _quantize(value: Decimal, exp: Decimal, rounding: str) -> Decimal:
    """``value.quantize(exp)`` with enough precision for every digit of the result.

    Decimal's default context carries 28 significant digits, and ``quantize`` refuses
    (``InvalidOperation``) a result that needs more: a spread of 10**27 to 4 places needs 32.
    The precision here grows with the value, so any finite figure can be rounded.
    """
    if not value.is_finite():
        return value.quantize(exp, rounding=rounding)
    exponent = exp.as_tuple().exponent
    assert isinstance(exponent, int)
    needed = max(value.adjusted(), 0) + 1 - min(exponent, 0) + 2
    if needed <= getcontext().prec:  # the usual case: no context of its own needed
        return value.quantize(exp, rounding=rounding)
    with localcontext() as ctx:
        ctx.prec = needed
        return value.quantize(exp, rounding=rounding)


def require_pence(value: object, name: str = "amount") -> int:
    """Refuse anything that is not an exact integer number of pence (bool and float included)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer number of pence, got {type(value).__name__}")
    return value


def unit_price(pack_price_pence: int, units_per_pack: int) -> Decimal:
    """Exact pence per base unit (not rounded)."""
    require_pence(pack_price_pence, "pack_price_pence")
    if units_per_pack <= 0:
        raise ValueError("units_per_pack must be positive")
    return Decimal(pack_price_pence) / Decimal(units_per_pack)


def per_unit(total_pence: int, units: int) -> Decimal:
    """Exact pence per unit for a total paid over a number of base units."""
    if units <= 0:
        raise ValueError("units must be positive")
    return Decimal(total_pence) / Decimal(units)


def round_unit_price(value: Decimal) -> Decimal:
    """The one rounding of a per-unit price: 4 places, half to even."""
    return _quantize(value, UNIT_PRICE_PLACES, ROUND_HALF_EVEN)


def unit_price_json(value: Decimal | None) -> float | None:
    """A per-unit price as a JSON number with at most 4 decimal places.

    The rounding happens in Decimal; the float conversion of a 4-place decimal is exact enough
    that JSON shows the same digits.
    """
    if value is None:
        return None
    return float(round_unit_price(value))


def round_pence(value: Decimal | Fraction) -> int:
    """Round a derived amount (an exact Fraction, or a Decimal) to whole pence, once, half to
    even. ``round`` of a ``Fraction`` is exact at any size."""
    return round(Fraction(value))


def vat_pence(net_pence: int, vat_rate_percent: Decimal | int | str) -> int:
    """VAT on a net amount, rounded half-up to the penny."""
    require_pence(net_pence, "net_pence")
    rate = Decimal(str(vat_rate_percent))
    return int(_quantize(Decimal(net_pence) * rate / Decimal(100), Decimal(1), ROUND_HALF_UP))


def format_gbp(pence: int) -> str:
    """Human form, e.g. ``£1,234.56``; negative amounts as ``-£3.00``."""
    require_pence(pence, "pence")
    sign = "-" if pence < 0 else ""
    pounds, rest = divmod(abs(pence), 100)
    return f"{sign}£{pounds:,}.{rest:02d}"


def format_unit_price(value: Decimal) -> str:
    """Human form of a per-unit price in pounds, e.g. ``£0.0256``."""
    pounds = _quantize(round_unit_price(value).scaleb(-2), Decimal("0.000001"), ROUND_HALF_EVEN)
    with localcontext() as ctx:
        ctx.prec = max(getcontext().prec, len(pounds.as_tuple().digits))
        return f"£{pounds.normalize():f}"
