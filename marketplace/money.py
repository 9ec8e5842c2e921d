"""Money: integer pence everywhere; Decimal only for derived per-unit prices.

Rules (DESIGN §4): amounts are ``int`` pence. A per-unit price (pence per base unit) may be
fractional; it is computed exactly with ``Decimal`` and rounded once, at the end, to 4 decimal
places with round-half-to-even. VAT is computed per line and rounded half-up to the penny, as
HMRC allows for line-level VAT.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal

UNIT_PRICE_PLACES = Decimal("0.0001")


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
    return value.quantize(UNIT_PRICE_PLACES, rounding=ROUND_HALF_EVEN)


def unit_price_json(value: Decimal | None) -> float | None:
    """A per-unit price as a JSON number with at most 4 decimal places.

    The rounding happens in Decimal; the float conversion of a 4-place decimal is exact enough
    that JSON shows the same digits.
    """
    if value is None:
        return None
    return float(round_unit_price(value))


def round_pence(value: Decimal) -> int:
    """Round a derived Decimal amount to whole pence, half to even."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def vat_pence(net_pence: int, vat_rate_percent: Decimal | int | str) -> int:
    """VAT on a net amount, rounded half-up to the penny."""
    require_pence(net_pence, "net_pence")
    rate = Decimal(str(vat_rate_percent))
    return int(
        (Decimal(net_pence) * rate / Decimal(100)).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    )


def format_gbp(pence: int) -> str:
    """Human form, e.g. ``£1,234.56``; negative amounts as ``-£3.00``."""
    require_pence(pence, "pence")
    sign = "-" if pence < 0 else ""
    pounds, rest = divmod(abs(pence), 100)
    return f"{sign}£{pounds:,}.{rest:02d}"


def format_unit_price(value: Decimal) -> str:
    """Human form of a per-unit price in pounds, e.g. ``£0.0256``."""
    pounds = round_unit_price(value) / Decimal(100)
    return f"£{pounds.quantize(Decimal('0.000001')).normalize():f}"
